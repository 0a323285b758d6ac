"""Projects, members, images, masks, the web tool and the REST API."""
