from django.urls import path
from django.views.generic import RedirectView

from control.console.admin import site

urlpatterns = [
    # The operator's guide gives the console as https://<management address>:8443/.
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", site.urls),
]
