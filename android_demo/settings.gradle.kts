pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}
plugins {
    // lets Gradle download the JDK 17 toolchain that core/ asks for (jvmToolchain(17)) when only
    // another JDK (e.g. Android Studio's bundled JDK 21) is installed
    id("org.gradle.toolchains.foojay-resolver-convention") version "1.0.0"
}
dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}
rootProject.name = "nasnet-edge-demo"
include(":app", ":core")
