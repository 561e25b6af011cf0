"""MediaPipe Tasks' ImageClassifier on a model and images, as a user runs it; prints JSON. Needs only mediapipe.

Runs in MediaPipe's own virtual environment (``.venv-mediapipe``, made by ``scripts/setup.sh``: MediaPipe pins
its OpenCV build, opencv-contrib-python, which cannot share an environment with the toolkit's
opencv-python-headless), so it imports nothing from the toolkit. ``benchmarks.clients`` calls it.

stdin: {"model": path, "images": [paths], "crop_fraction": null | f, "max_results": n}
  crop_fraction: also classify with a region of interest, the toolkit's centered square of that fraction
  of the shorter side (MediaPipe's default is the whole frame, resized to the input size).
stdout: {"mediapipe": version, "head": name, "results": [{"whole": [[label, score], ...], "crop": [...]}]}
"""

import json
import sys


def center_square(width: int, height: int, fraction: float):
    """The toolkit's crop (edge/preprocessing.center_crop_box) as a normalized (left, top, right, bottom)."""
    side = max(1, int(round(min(height, width) * fraction)))
    top, left = (height - side) // 2, (width - side) // 2
    return left / width, top / height, (left + side) / width, (top + side) / height


def main() -> int:
    spec = json.load(sys.stdin)
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision
    from mediapipe.tasks.python.components.containers.rect import RectF

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=spec["model"]),
                                            max_results=spec.get("max_results", 3))
    out = {"mediapipe": mp.__version__, "results": []}
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for path in spec["images"]:
            image = mp.Image.create_from_file(path)
            row = {}
            modes = [("whole", None)]
            if spec.get("crop_fraction"):
                left, top, right, bottom = center_square(image.width, image.height, spec["crop_fraction"])
                roi = RectF(left=left, top=top, right=right, bottom=bottom)
                modes.append(("crop", vision.ImageProcessingOptions(region_of_interest=roi)))
            for mode, processing in modes:
                result = classifier.classify(image, processing)
                head = result.classifications[0]
                out["head"] = head.head_name
                row[mode] = [[c.category_name, float(c.score)] for c in head.categories]
            out["results"].append(row)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
