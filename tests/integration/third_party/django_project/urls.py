from django.contrib import admin
from django.http import JsonResponse
from django.urls import path


def ping(request):
    return JsonResponse({"ok": True, "path": request.path, "method": request.method})


urlpatterns = [
    path("admin/", admin.site.urls),
    path("ping/", ping),
]
