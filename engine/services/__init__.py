"""Engine services (all writes): jobs now; the model registry and inference arrive with issue 3."""
