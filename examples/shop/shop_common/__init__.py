"""Small helpers shared by the shop's services (each still has its own database)."""
