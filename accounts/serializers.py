from rest_framework import serializers


class MeSerializer(serializers.Serializer):
    email = serializers.EmailField()
    role = serializers.CharField(allow_null=True, help_text="None while the account awaits approval.")
    capabilities = serializers.ListField(child=serializers.CharField())


class TokenRequestSerializer(serializers.Serializer):
    email = serializers.EmailField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)
    code = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="The current code from the authenticator app, for accounts with TOTP.",
    )


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(
        help_text="Send as `Authorization: Token <token>`. Shown only now: the platform keeps only a hash of it."
    )
    expires_at = serializers.DateTimeField(
        help_text="After this the token is refused; it is also revoked by a password or role change."
    )


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class TokenRequestErrorSerializer(ErrorSerializer):
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Problems with each field, when the request itself is malformed.",
    )
