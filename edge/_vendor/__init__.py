"""Third-party code kept verbatim (see each file's header and README.md here)."""
