from .permissions import has_capability
from .roles import ALL_CAPABILITIES


def roles(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"can": {}, "user_role": None}
    return {
        "can": {capability: has_capability(user, capability) for capability in ALL_CAPABILITIES},
        "user_role": user.role,
    }
