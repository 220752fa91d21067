"""`distill serve`: the student and the teacher behind one OpenAI-compatible endpoint, routed as compare decided."""
