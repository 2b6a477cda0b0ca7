"""Run by bench/browser.py --timeline in the site's environment: when each cell of the case was stored and
when its prediction was stored (epoch seconds), and when each one's classification task started (the image
turning "classifying" is not stored, so the prediction's time is the task's end for that cell). Prints JSON."""

import json
import sys

import django

django.setup()

from cases.models import CellImage, Prediction  # noqa: E402


def main(case_id: int) -> list[dict]:
    images = {
        image["pk"]: {"id": image["pk"], "stored": image["uploaded_at"].timestamp(), "predicted": None}
        for image in CellImage.objects.filter(case_id=case_id).values("pk", "uploaded_at")
    }
    for prediction in Prediction.objects.filter(image__case_id=case_id).values("image_id", "created_at"):
        images[prediction["image_id"]]["predicted"] = prediction["created_at"].timestamp()
    return sorted(images.values(), key=lambda image: image["id"])


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]))))
