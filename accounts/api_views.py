from django.utils.translation import gettext
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from .selectors import capabilities_of
from .serializers import (
    ErrorSerializer,
    MeSerializer,
    TokenRequestErrorSerializer,
    TokenRequestSerializer,
    TokenSerializer,
)
from .services import TokenRefused, issue_api_token


class MeView(APIView):
    """Who the caller is. Open to every signed-in person, pending ones included, because it only
    describes the caller and tells a pending API client why everything else is refused."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: MeSerializer, 403: ErrorSerializer}, tags=["accounts"])
    def get(self, request):
        user = request.user
        data = {"email": user.email, "role": user.role, "capabilities": capabilities_of(user=user)}
        return Response(MeSerializer(data).data)


class TokenView(APIView):
    """Exchange email and password (and a TOTP code where the account has one) for an API token."""

    # Signing in: no session (no CSRF) and no prior authentication.
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=TokenRequestSerializer,
        responses={200: TokenSerializer, 400: TokenRequestErrorSerializer, 403: ErrorSerializer, 429: ErrorSerializer},
        auth=[],
        tags=["accounts"],
    )
    def post(self, request):
        form = TokenRequestSerializer(data=request.data)
        if not form.is_valid():
            return Response(
                {"detail": gettext("Give your email address and password."), "errors": form.errors},
                status=status.HTTP_400_BAD_REQUEST,
            )
        try:
            # Django's own request: allauth's rate limits and the authentication backends expect it.
            token, key = issue_api_token(request=request._request, **form.validated_data)
        except TokenRefused as refusal:
            return Response({"detail": str(refusal)}, status=refusal.status)
        return Response({"token": key, "expires_at": token.expires_at}, status=status.HTTP_200_OK)
