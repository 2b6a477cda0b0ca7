"""REST API for model versions (mounted under /api/v1/): list, detail, import a model file, activate."""

from __future__ import annotations

from django.utils.translation import gettext
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from accounts.permissions import HasCapability

from . import services
from .forms import ModelImportForm
from .importing import DEFAULT_SCALE, SCALE_MODES, ImportFailed
from .models import ModelImport, ModelVersion

READERS = ("manage_models", "view_dashboard")


class ModelVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "name",
            "source",
            "backbone",
            "classes",
            "input_size",
            "confidence_threshold",
            "ood_threshold",
            "temperature",
            "metrics",
            "is_active",
            "created_at",
            "activated_at",
        ]
        read_only_fields = fields


class ModelImportSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelImport
        fields = ["id", "original_name", "status", "message", "version", "created_at", "finished_at"]
        read_only_fields = fields


class ModelImportRequestSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A Keras model file (.keras, .h5, .hdf5).")
    name = serializers.CharField(required=False, allow_blank=True, max_length=120)
    classes = serializers.CharField(required=False, allow_blank=True, help_text="Comma-separated, in output order.")
    input_size = serializers.IntegerField(required=False, min_value=16, max_value=1024)
    scale = serializers.ChoiceField(choices=list(SCALE_MODES), required=False, default=DEFAULT_SCALE)


@extend_schema_view(
    get=extend_schema(
        summary="Model versions, the active one first",
        parameters=[
            OpenApiParameter("is_active", OpenApiTypes.BOOL, description="Only the active (true) or the others."),
            OpenApiParameter("source", OpenApiTypes.STR, enum=ModelVersion.Source.values),
        ],
    ),
    post=extend_schema(
        summary="Queue a Keras model file for import as a new version (a worker imports it; audited)",
        request={"multipart/form-data": ModelImportRequestSerializer},
        responses={
            202: ModelImportSerializer,
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="Not imported: `detail`, or errors by field."),
        },
    ),
)
class ModelVersionListAPI(generics.ListAPIView):
    permission_classes = [HasCapability]
    required_capabilities = {"GET": READERS, "HEAD": READERS, "OPTIONS": READERS, "POST": ("manage_models",)}
    serializer_class = ModelVersionSerializer
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        versions = ModelVersion.objects.order_by("-is_active", "-created_at")
        is_active = self.request.query_params.get("is_active")
        if is_active is not None:
            if is_active.lower() not in {"true", "false"}:
                raise serializers.ValidationError({"is_active": [gettext("Use true or false.")]})
            versions = versions.filter(is_active=is_active.lower() == "true")
        source = self.request.query_params.get("source")
        if source:
            versions = versions.filter(source=source)
        return versions

    def post(self, request):
        data = request.data.copy()
        data.setdefault("scale", DEFAULT_SCALE)  # documented default of the API (the form asks for it)
        form = ModelImportForm(data, request.FILES)
        if not form.is_valid():
            return Response(form.errors, status=status.HTTP_400_BAD_REQUEST)
        try:
            job = form.save(actor=request.user)
        except ImportFailed as exc:
            return Response({"detail": f"The file was not imported: {exc}"}, status=status.HTTP_400_BAD_REQUEST)
        job.refresh_from_db()
        return Response(ModelImportSerializer(job).data, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(get=extend_schema(summary="One model import: queued, importing, imported or failed"))
class ModelImportDetailAPI(generics.RetrieveAPIView):
    permission_classes = [HasCapability]
    required_capabilities = ("manage_models",)
    serializer_class = ModelImportSerializer
    queryset = ModelImport.objects.all()


@extend_schema_view(get=extend_schema(summary="One model version with its metrics"))
class ModelVersionDetailAPI(generics.RetrieveAPIView):
    permission_classes = [HasCapability]
    required_capabilities = READERS
    serializer_class = ModelVersionSerializer
    queryset = ModelVersion.objects.all()


class ModelVersionActivateAPI(generics.GenericAPIView):
    permission_classes = [HasCapability]
    required_capabilities = ("manage_models",)
    serializer_class = ModelVersionSerializer
    queryset = ModelVersion.objects.all()

    @extend_schema(
        summary="Make this the version that classifies new cells (audited); refused (409) for a version "
        "without a recorded evaluation",
        request=None,
        responses={200: ModelVersionSerializer, 409: OpenApiResponse(OpenApiTypes.OBJECT, description="`detail`")},
    )
    def post(self, request, pk: int):
        version = self.get_object()
        if not version.is_active:
            try:
                version = services.activate_version(version, request.user, request=request, require_evaluation=True)
            except services.ActivationRefused as exc:
                return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(ModelVersionSerializer(version).data)
