from PIL import Image

from cases import services
from cases.models import Review
from tests.cases import images
from tests.factories import CaseFactory


def upload(case, user, name, data):
    (image,), _ = services.add_images(case=case, files=[images.upload(name, data)], uploaded_by=user)
    return image


def review(image, reviewer, label, kind=Review.Kind.CONFIRM):
    return Review.objects.create(image=image, reviewer=reviewer, kind=kind, to_label=label)


def test_reviewed_cells_are_written_under_their_latest_label(tmp_path, technician, pathologist):
    case = CaseFactory(created_by=technician)
    png = images.rgb_png()
    image = upload(case, technician, "a.png", png)
    review(image, pathologist, "neutrophil")
    review(image, pathologist, "monocyte", kind=Review.Kind.OVERRIDE)

    counts = services.export_confirmed_cells(destination=tmp_path)

    assert counts == {"monocyte": 1}
    assert (tmp_path / "monocyte" / f"cell-{image.pk}.png").read_bytes() == png
    assert not (tmp_path / "neutrophil").exists()


def test_unreviewed_cells_are_not_exported(tmp_path, technician):
    case = CaseFactory(created_by=technician)
    upload(case, technician, "a.png", images.rgb_png())

    assert services.export_confirmed_cells(destination=tmp_path) == {}


def test_tiff_cells_are_written_as_png(tmp_path, technician, pathologist):
    case = CaseFactory(created_by=technician)
    image = upload(case, technician, "scan.tif", images.encode(Image.new("RGB", (8, 8), (1, 2, 3)), "TIFF"))
    review(image, pathologist, "lymphocyte")

    services.export_confirmed_cells(destination=tmp_path)

    with Image.open(tmp_path / "lymphocyte" / f"cell-{image.pk}.png") as written:
        assert (written.format, written.getpixel((0, 0))) == ("PNG", (1, 2, 3))


def test_training_exporter_returns_a_class_per_folder_directory(tmp_path, technician, pathologist):
    case = CaseFactory(created_by=technician)
    review(upload(case, technician, "a.jpg", images.rgb_jpeg()), pathologist, "eosinophil")

    folder = services.write_confirmed_training_folder(output_dir=tmp_path)

    assert [path.name for path in folder.iterdir()] == ["eosinophil"]
