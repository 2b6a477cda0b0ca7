import factory
from django.contrib.auth.models import Group

from accounts.models import User
from cases.models import Case, CellImage, Laboratory, Prediction
from inference.models import ModelVersion

DEFAULT_PASSWORD = "correct-horse-battery-staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@lab.example")
    password = factory.PostGenerationMethodCall("set_password", DEFAULT_PASSWORD)

    @factory.post_generation
    def role(self, create, extracted, **kwargs):
        if extracted:
            self.groups.add(Group.objects.get(name=extracted))
        if create:
            self.save()


class LaboratoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Laboratory

    name = factory.Sequence(lambda n: f"Laboratory {n}")
    instrument = "Olympus CX31 with a phone camera"
    um_per_pixel = None


class CaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Case

    accession_id = factory.Sequence(lambda n: f"ACC-{n:05d}")
    patient_reference = factory.Sequence(lambda n: f"MRN{n:07d}")
    created_by = factory.SubFactory(UserFactory, role="technician")


PBC_CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]


class ModelVersionFactory(factory.django.DjangoModelFactory):
    """A registry row only: no model file behind it (enough for reviews, reports and pages)."""

    class Meta:
        model = ModelVersion

    name = factory.Sequence(lambda n: f"test-model-{n}")
    source = ModelVersion.Source.TRAINED
    backbone = "tiny"
    classes = factory.LazyFunction(lambda: list(PBC_CLASSES))
    input_size = 64
    preprocessing = factory.LazyFunction(lambda: {"input_size": 64})
    artifact_dir = factory.Sequence(lambda n: f"test-model-{n}")
    serving_artifact = "model.tflite"


class CellImageFactory(factory.django.DjangoModelFactory):
    """A cell row without a stored file behind it."""

    class Meta:
        model = CellImage

    case = factory.SubFactory(CaseFactory)
    storage_key = factory.Sequence(lambda n: f"{n % 256:02x}/{n:032x}")
    sha256 = factory.Sequence(lambda n: f"{n:064x}")
    size_bytes = 1000
    width = 64
    height = 64
    content_type = "image/png"
    original_name = factory.Sequence(lambda n: f"cell_{n}.png")
    uploaded_by = factory.LazyAttribute(lambda cell: cell.case.created_by)
    status = CellImage.Status.CLASSIFIED


class PredictionFactory(factory.django.DjangoModelFactory):
    """`label` gets probability `confidence`; the rest is spread evenly over the other classes."""

    class Meta:
        model = Prediction

    image = factory.SubFactory(CellImageFactory)
    model_version = factory.SubFactory(ModelVersionFactory)
    label = "neutrophil"
    confidence = 0.9
    probabilities = factory.LazyAttribute(
        lambda p: {
            name: (p.confidence if name == p.label else (1 - p.confidence) / (len(p.model_version.classes) - 1))
            for name in p.model_version.classes
        }
    )
    flagged = False
    latency_ms = 12.0
