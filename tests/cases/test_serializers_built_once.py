"""Cell-image and prediction serializers work out their fields once per class (cases/serializers.py); each
instance still gets fields of its own, bound to it, and the same representation."""

import pytest

from cases.serializers import CellImageSerializer, PredictionSerializer
from tests.factories import CellImageFactory, ModelVersionFactory, PredictionFactory


@pytest.mark.django_db
def test_each_instance_gets_its_own_bound_fields():
    first, second = CellImageSerializer(), CellImageSerializer()

    assert set(first.fields) == set(second.fields) == set(CellImageSerializer.Meta.fields)
    for name in first.fields:
        assert first.fields[name] is not second.fields[name]
        assert first.fields[name].parent is first
        assert second.fields[name].parent is second
    nested = first.fields["predictions"]
    assert nested.child is not second.fields["predictions"].child


@pytest.mark.django_db
def test_later_instances_represent_images_like_the_first():
    version = ModelVersionFactory(name="v-built-once")
    images = [CellImageFactory() for _ in range(2)]
    for image in images:
        PredictionFactory(image=image, model_version=version, label="lymphocyte")

    first = [CellImageSerializer(image).data for image in images]
    again = [CellImageSerializer(image).data for image in images]

    assert first == again
    assert [data["id"] for data in again] == [image.pk for image in images]
    assert again[0]["predictions"][0]["model_version"] == "v-built-once"
    assert again[0]["predictions"][0]["label"] == "lymphocyte"


def test_the_prediction_fields_are_built_from_the_model_once(monkeypatch):
    PredictionSerializer.__dict__.get("_fields_built_once") or PredictionSerializer().fields
    builds = []
    original = PredictionSerializer.build_field

    def counting_build_field(self, *args, **kwargs):
        builds.append(args[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PredictionSerializer, "build_field", counting_build_field)
    for _ in range(3):
        assert set(PredictionSerializer().fields) == set(PredictionSerializer.Meta.fields)
    assert builds == []


def test_image_urls_are_the_resolvers_under_any_script_prefix():
    from django.urls import reverse, set_script_prefix

    from cases.serializers import image_url

    for prefix in ("/", "/lab-north/"):
        set_script_prefix(prefix)
        try:
            for pk in (1, 7, 40, 123456789):
                assert image_url(pk) == reverse("cases:image", args=[pk])
            assert image_url(5).startswith(prefix)
        finally:
            set_script_prefix("/")
