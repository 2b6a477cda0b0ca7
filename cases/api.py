"""REST API for cases and cell images (mounted under /api/v1/)."""

from __future__ import annotations

from django.db.models import Prefetch
from django.http import Http404
from django.utils.translation import gettext
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from accounts.permissions import HasCapability

from . import selectors, services
from .models import Case, CellImage, Prediction
from .serializers import (
    CaseFilterSerializer,
    CaseProblemSerializer,
    CaseSerializer,
    CellImageSerializer,
    LaboratorySerializer,
    UploadResultSerializer,
    UploadSerializer,
    image_detail_data,
    upload_result_data,
)

READ_METHODS = ("GET", "HEAD", "OPTIONS")


def capabilities_by_method(*, read: str, write: str) -> dict[str, tuple[str, ...]]:
    return {**{method: (read,) for method in READ_METHODS}, "POST": (write,)}


def _images_with_predictions():
    """Cell images with their predictions (newest first) and each prediction's model version in the same
    query as the prediction: two queries, however many predictions and versions an image has."""
    return CellImage.objects.prefetch_related(
        Prefetch("predictions", queryset=Prediction.objects.select_related("model_version"))
    )


def _case_or_404(pk: int, *, related: bool = True) -> Case:
    try:
        return selectors.get_case(pk=pk, related=related)
    except Case.DoesNotExist as exc:
        raise Http404("No such case.") from exc


@extend_schema_view(
    get=extend_schema(
        summary="List cases (never with the patient reference)",
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, enum=Case.Status.values, description="Only cases in it."),
            OpenApiParameter("accession", OpenApiTypes.STR, description="Accession ids containing this text."),
        ],
    ),
    post=extend_schema(summary="Create a case"),
)
class CaseListCreateAPI(generics.ListCreateAPIView):
    permission_classes = [HasCapability]
    required_capabilities = capabilities_by_method(read="view_cases", write="create_case")
    serializer_class = CaseSerializer

    def get_queryset(self):
        filters = CaseFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return selectors.list_cases(
            status=filters.validated_data.get("status"), accession=filters.validated_data.get("accession")
        )

    def perform_create(self, serializer):
        try:
            serializer.instance = services.create_case(
                accession_id=serializer.validated_data["accession_id"],
                patient_reference=serializer.validated_data.get("patient_reference", ""),
                laboratory=serializer.validated_data.get("laboratory"),
                created_by=self.request.user,
                request=self.request,
            )
        except services.CaseError as exc:
            raise ValidationError({"accession_id": [str(exc)]}) from exc


@extend_schema_view(get=extend_schema(summary="One case"))
class CaseRetrieveAPI(generics.RetrieveAPIView):
    permission_classes = [HasCapability]
    required_capabilities = ("view_cases",)
    serializer_class = CaseSerializer

    def get_queryset(self):
        return selectors.list_cases()


@extend_schema_view(
    get=extend_schema(summary="The images of a case with their predictions (newest first)"),
    post=extend_schema(
        summary="Upload images to a case",
        description=(
            "Multipart, one or more files in the field `files`. Each file is judged on its own: good files are "
            "kept and queued for classification, each rejected file comes back with its message. 201 when at "
            "least one file was accepted, 400 when none was, 409 when the case is signed."
        ),
        request={"multipart/form-data": UploadSerializer},
        responses={
            201: UploadResultSerializer,
            400: UploadResultSerializer,
            409: OpenApiResponse(CaseProblemSerializer, description="The case is signed."),
        },
    ),
)
class CaseImagesAPI(generics.ListAPIView):
    permission_classes = [HasCapability]
    required_capabilities = capabilities_by_method(read="view_cases", write="create_case")
    serializer_class = CellImageSerializer
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        return selectors.images_of_case(case=_case_or_404(self.kwargs["pk"], related=False), uploader=False)

    def post(self, request, pk: int):
        case = _case_or_404(pk, related=False)
        files = request.FILES.getlist("files")
        if not files:
            return Response(
                {
                    "accepted": [],
                    "rejected": [],
                    "detail": gettext("Send one or more image files in the field `files`."),
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        try:
            accepted, rejected = services.add_images(case=case, files=files, uploaded_by=request.user, request=request)
        except services.UploadRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        # The rows just written, as the API shows them (no predictions, no cells yet): no query to read them back,
        # and no serializer built per request (UploadResultSerializer documents the answer's shape).
        body = upload_result_data(accepted, rejected)
        return Response(body, status=status.HTTP_201_CREATED if accepted else status.HTTP_400_BAD_REQUEST)


@extend_schema_view(get=extend_schema(summary="One cell image with its predictions"))
class ImageRetrieveAPI(generics.RetrieveAPIView):
    permission_classes = [HasCapability]
    required_capabilities = ("view_cases",)
    serializer_class = CellImageSerializer

    def get_queryset(self):
        return _images_with_predictions()

    def retrieve(self, request, *args, **kwargs):
        # Polled by every client waiting for a cell: read as values in one query, same JSON as the serializer.
        try:
            found = selectors.image_detail(pk=self.kwargs["pk"])
        except CellImage.DoesNotExist as exc:
            raise Http404("No CellImage matches the given query.") from exc  # get_object's words
        return Response(image_detail_data(*found))


class ImageRetryAPI(generics.GenericAPIView):
    permission_classes = [HasCapability]
    required_capabilities = ("retry_classification",)
    serializer_class = CellImageSerializer
    queryset = CellImage.objects.all()

    @extend_schema(
        summary="Classify a failed (or stuck) image again",
        request=None,
        responses={202: CellImageSerializer, 409: OpenApiResponse(CaseProblemSerializer, description="Not retryable.")},
    )
    def post(self, request, pk: int):
        image = self.get_object()
        try:
            services.retry_classification(image=image, actor=request.user, request=request)
        except services.RetryRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        refreshed = _images_with_predictions().get(pk=image.pk)
        return Response(CellImageSerializer(refreshed).data, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(get=extend_schema(summary="The laboratories a case can name (id, name, instrument, scale)"))
class LaboratoryListAPI(generics.ListAPIView):
    permission_classes = [HasCapability]
    required_capabilities = ("view_cases", "create_case", "manage_laboratories")
    serializer_class = LaboratorySerializer
    pagination_class = None

    def get_queryset(self):
        return selectors.list_laboratories()
