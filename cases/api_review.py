"""REST API for the review workflow (mounted under /api/v1/): reviews, sign-off, amendments, differential."""

from __future__ import annotations

from django.http import Http404
from django.utils.translation import gettext
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasCapability

from . import review_selectors, review_services, selectors
from .models import Case, Review
from .review_reauth import ReauthenticationFailed, reauthenticate

READ_METHODS = ("GET", "HEAD", "OPTIONS")
READERS = ("view_cases", "review_cells")


def _case_or_404(pk: int) -> Case:
    try:
        return selectors.get_case(pk=pk)
    except Case.DoesNotExist as exc:
        raise Http404("No such case.") from exc


class ReviewSerializer(serializers.ModelSerializer):
    case = serializers.IntegerField(source="image.case_id", read_only=True)
    reviewer = serializers.EmailField(source="reviewer.email", read_only=True)

    class Meta:
        model = Review
        fields = ["id", "case", "image", "kind", "from_label", "to_label", "reason", "reviewer", "created_at"]
        read_only_fields = fields


class ReviewRequestSerializer(serializers.Serializer):
    cells = serializers.ListField(
        child=serializers.IntegerField(min_value=1), min_length=1, max_length=5000, help_text="Cell image ids."
    )
    to_label = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=60,
        help_text=(
            "Reclassify every cell to this class (a model class, or a reviewer-only label: smudge, artefact, "
            "abnormal); leave out to confirm each cell's current label."
        ),
    )
    reason = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=review_services.MAX_REASON_LENGTH,
        help_text="Why the label changes (optional while reviewing; amendments after sign-off need one).",
    )


class AmendmentRequestSerializer(serializers.Serializer):
    cells = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1, max_length=5000)
    to_label = serializers.CharField(max_length=60)
    reason = serializers.CharField(max_length=review_services.MAX_REASON_LENGTH)


class ReviewProblemSerializer(serializers.Serializer):
    detail = serializers.CharField()


class SignedCaseSerializer(serializers.ModelSerializer):
    signed_by = serializers.EmailField(source="signed_by.email", read_only=True, allow_null=True)

    class Meta:
        model = Case
        fields = ["id", "accession_id", "status", "signed_by", "signed_at"]
        read_only_fields = fields


class DifferentialRowSerializer(serializers.Serializer):
    label = serializers.CharField()
    name = serializers.CharField()
    count = serializers.IntegerField()
    reviewed = serializers.IntegerField()
    unreviewed = serializers.IntegerField()
    leukocyte = serializers.BooleanField()
    value = serializers.FloatField(allow_null=True, help_text="% of leukocytes; per 100 leukocytes for NRBC.")
    unit = serializers.CharField(allow_blank=True)
    low = serializers.FloatField(allow_null=True)
    high = serializers.FloatField(allow_null=True)
    flag = serializers.ChoiceField(choices=["", "low", "high"])


class DifferentialSerializer(serializers.Serializer):
    case = serializers.IntegerField()
    total_cells = serializers.IntegerField()
    leukocytes = serializers.IntegerField()
    reviewed_cells = serializers.IntegerField()
    unreviewed_cells = serializers.IntegerField()
    unlabelled_cells = serializers.IntegerField()
    rows = DifferentialRowSerializer(many=True)
    model_warning = serializers.CharField(
        allow_blank=True,
        help_text="'This model is not validated for images like these.' when the case's cells as a whole look "
        "unlike the training data (cases.selectors.model_validity), else empty.",
    )


def _refusal(exc: review_services.ReviewRefused) -> Response:
    code = status.HTTP_409_CONFLICT if isinstance(exc, review_services.ReviewConflict) else status.HTTP_400_BAD_REQUEST
    return Response({"detail": str(exc)}, status=code)


REFUSALS = {
    400: OpenApiResponse(
        ReviewProblemSerializer,
        description="Bad input: unknown cell or class, missing reason, re-authentication failed.",
    ),
    409: OpenApiResponse(ReviewProblemSerializer, description="The case's state does not allow it."),
}


@extend_schema_view(
    get=extend_schema(
        summary="The review history of a case, oldest first",
        parameters=[
            OpenApiParameter("kind", OpenApiTypes.STR, enum=Review.Kind.values, description="Only reviews of it."),
            OpenApiParameter("image", OpenApiTypes.INT, description="Only reviews of this cell image."),
        ],
    ),
    post=extend_schema(
        summary="Confirm or reclassify cells",
        description=(
            "Without `to_label` each cell keeps its current label (confirm); with it every cell gets that class "
            "(a change of label is an override; its `reason` is optional). Refused (409) once the case is signed."
        ),
        request=ReviewRequestSerializer,
        responses={201: ReviewSerializer(many=True), **REFUSALS},
    ),
)
class CaseReviewsAPI(generics.ListAPIView):
    permission_classes = [HasCapability]
    required_capabilities = {**{method: READERS for method in READ_METHODS}, "POST": ("review_cells",)}
    serializer_class = ReviewSerializer

    def get_queryset(self):
        reviews = review_selectors.case_reviews(case=_case_or_404(self.kwargs["pk"]))
        kind = self.request.query_params.get("kind")
        if kind:
            reviews = reviews.filter(kind=kind)
        image = self.request.query_params.get("image")
        if image:
            if not image.isdigit():
                raise serializers.ValidationError({"image": [gettext("A cell image id is a whole number.")]})
            reviews = reviews.filter(image_id=int(image))
        return reviews

    def post(self, request, pk: int):
        case = _case_or_404(pk)
        body = ReviewRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            reviews = review_services.review_cells(
                case=case,
                image_ids=body.validated_data["cells"],
                reviewer=request.user,
                to_label=body.validated_data.get("to_label", ""),
                reason=body.validated_data.get("reason", ""),
                request=request,
            )
        except review_services.ReviewRefused as exc:
            return _refusal(exc)
        return Response(ReviewSerializer(reviews, many=True).data, status=status.HTTP_201_CREATED)


class SignRequestSerializer(serializers.Serializer):
    password = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, write_only=True)
    code = serializers.CharField(
        required=False, allow_blank=True, max_length=10, help_text="A current TOTP code, for accounts with TOTP."
    )


class CaseSignAPI(APIView):
    permission_classes = [HasCapability]
    required_capabilities = ("sign_case",)

    @extend_schema(
        summary="Sign a case (every cell must have a final label)",
        description="Signing re-authenticates the signer: send the account's `password` or a current TOTP `code`.",
        request=SignRequestSerializer,
        responses={200: SignedCaseSerializer, 400: REFUSALS[400], 409: REFUSALS[409]},
    )
    def post(self, request, pk: int):
        case = _case_or_404(pk)
        body = SignRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            reauthenticate(
                user=request.user,
                password=body.validated_data.get("password", ""),
                code=body.validated_data.get("code", ""),
                purpose=f"sign case {case.accession_id}",
                request=request,
            )
        except ReauthenticationFailed as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        try:
            case = review_services.sign_case(case=case, signer=request.user, request=request)
        except review_services.ReviewRefused as exc:
            return _refusal(exc)
        return Response(SignedCaseSerializer(case).data)


class CaseAmendmentsAPI(APIView):
    permission_classes = [HasCapability]
    required_capabilities = ("sign_case",)

    @extend_schema(
        summary="Amend the final label of cells of a signed case (a reason is required)",
        request=AmendmentRequestSerializer,
        responses={201: ReviewSerializer(many=True), **REFUSALS},
    )
    def post(self, request, pk: int):
        case = _case_or_404(pk)
        body = AmendmentRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            reviews = review_services.amend_cells(
                case=case,
                image_ids=body.validated_data["cells"],
                amender=request.user,
                to_label=body.validated_data["to_label"],
                reason=body.validated_data["reason"],
                request=request,
            )
        except review_services.ReviewRefused as exc:
            return _refusal(exc)
        return Response(ReviewSerializer(reviews, many=True).data, status=status.HTTP_201_CREATED)


class CaseDifferentialAPI(APIView):
    permission_classes = [HasCapability]
    required_capabilities = READERS

    @extend_schema(
        summary="Differential count of a case with adult reference ranges",
        description="From final labels; unreviewed cells count with their predicted label (see `unreviewed`).",
        responses={200: DifferentialSerializer},
    )
    def get(self, request, pk: int):
        case = _case_or_404(pk)
        differential = review_selectors.case_differential(case=case)
        body = {
            "case": case.pk,
            "total_cells": differential.total_cells,
            "leukocytes": differential.leukocytes,
            "reviewed_cells": differential.reviewed_cells,
            "unreviewed_cells": differential.unreviewed_cells,
            "unlabelled_cells": differential.unlabelled_cells,
            "rows": differential.rows,
            "model_warning": selectors.model_validity(case=case).message,
        }
        return Response(DifferentialSerializer(body).data)
