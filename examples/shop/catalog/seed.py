"""Sample products the catalog starts with: (id, name, description, price in cents, seller id)."""

PRODUCTS = [
    (1, "Espresso cup", "Thick-walled porcelain cup, 80 ml", 900, 1),
    (2, "Pour-over kettle", "Gooseneck kettle, 1 litre, stainless steel", 4500, 1),
    (3, "Coffee grinder", "Conical burr hand grinder", 6900, 1),
    (4, "Field notebook", "Dot grid, 96 pages, waterproof cover", 1200, 2),
    (5, "Fountain pen", "Steel nib, medium, refillable", 3500, 2),
    (6, "Designing Data-Intensive Applications", "A book about distributed data", 4200, 2),
    (7, "Release It!", "A book about stable production software", 3900, 2),
    (8, "Claw hammer", "16 oz, fibreglass handle", 2400, 3),
    (9, "Screwdriver set", "12 precision screwdrivers in a case", 1900, 3),
    (10, "Tape measure", "5 m, metric and imperial", 1100, 3),
    (11, "Cold brew bottle", "1 litre glass bottle with a fine filter", 2800, 1),
    (12, "Desk lamp", "LED, dimmable, warm white", 5200, 3),
]
