"""nas: differentiable architecture search engine (issue 3)."""
