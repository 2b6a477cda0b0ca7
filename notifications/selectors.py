from .models import Notification

PAGE_SIZE = 50


def unread_count(*, user) -> int:
    return Notification.objects.filter(recipient=user, read_at__isnull=True).count()


def recent(*, user, limit: int = PAGE_SIZE):
    return Notification.objects.filter(recipient=user).order_by("-created_at", "-id")[:limit]
