"""NGINX's configuration templates, as package data: no code. provisioning.nginx reads them
with importlib.resources, so they are found in the installed wheel as in the source tree."""
