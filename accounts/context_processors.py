from .permissions import has_capability
from .roles import ROLE_CAPABILITIES


def roles(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"can": {}, "user_role": None}
    capabilities = set().union(*ROLE_CAPABILITIES.values())
    return {
        "can": {capability: has_capability(user, capability) for capability in capabilities},
        "user_role": user.role,
    }
