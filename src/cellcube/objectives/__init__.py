"""What training minimises: loss terms, mined negatives, curriculum, multi-teacher weights."""
