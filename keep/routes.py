"""API paths that more than one plane must agree on: the appliance's body limits and the NGINX
config provisioning renders both key on them."""

# The document upload route, the only one that takes bodies up to KEEP_RAG_MAX_UPLOAD_BYTES
# (a regular expression matched against the whole path).
DOCUMENTS_PATH = r"/v1/sessions/[^/]+/documents"
