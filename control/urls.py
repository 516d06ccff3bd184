from django.urls import path

from control.console.admin import site

urlpatterns = [path("admin/", site.urls)]
