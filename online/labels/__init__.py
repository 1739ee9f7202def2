"""Labels from people: feedback join, label-request policy, open taxonomy, accepted labels."""
