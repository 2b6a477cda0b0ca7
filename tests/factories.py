import factory
from django.contrib.auth.models import Group

from accounts.models import User
from cases.models import Case

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


class CaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Case

    accession_id = factory.Sequence(lambda n: f"ACC-{n:05d}")
    patient_reference = factory.Sequence(lambda n: f"MRN{n:07d}")
    created_by = factory.SubFactory(UserFactory, role="technician")
