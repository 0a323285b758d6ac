"""The server-rendered web UI: project list, project page (images, upload, exports), job page."""
