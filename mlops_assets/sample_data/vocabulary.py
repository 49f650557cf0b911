"""Word lists and category distributions the sample-data generator draws from."""

FIRST_NAMES = (
    "Olivia Liam Emma Noah Ava Oliver Sophia Elijah Isabella James Mia William Amelia Benjamin "
    "Harper Lucas Evelyn Henry Abigail Alexander Emily Mason Ella Michael Elizabeth Ethan Camila "
    "Daniel Luna Jacob Sofia Logan Avery Jackson Mila Levi Aria Sebastian Scarlett Mateo Penelope "
    "Jack Layla Owen Chloe Theodore Victoria Aiden Madison Samuel Eleanor Joseph Grace John Nora "
    "David Riley Wyatt Zoey Matthew Hannah Luke Hazel Asher Lily Carter Ellie Julian Violet Grayson "
    "Lillian Leo Zoe Jayden Stella Gabriel Aurora Isaac Natalie Lincoln Emilia Anthony Everly "
    "Hudson Leah Dylan Aubrey Ezra Willow Thomas Addison Charles Lucy Christopher Audrey Jaxon "
    "Bella Maverick Nova Josiah Brooklyn Isaiah Paisley Andrew Savannah Elias Claire Joshua Skylar"
).split()

LAST_NAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris "
    "Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill "
    "Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Gomez Phillips "
    "Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook Rogers "
    "Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson "
    "Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo "
    "Sanders Patel Myers Long Ross Foster Jimenez O'Brien Novak Kowalski Schmidt Muller"
).split()

EMAIL_DOMAINS = ("example.com", "mail.example", "post.example", "inbox.example")

STREET_NAMES = (
    "Oak Maple Cedar Pine Elm Birch Walnut Willow Lake Hill River Park Sunset Highland Meadow "
    "Forest Church Mill Station Bridge Market Spring Valley Orchard Garden Harbor Chestnut Aspen"
).split()
STREET_SUFFIXES = ("Street", "Avenue", "Road", "Lane", "Drive", "Court", "Way", "Place")

# (city, region): region is a coarse, non-identifying attribute; city is a quasi-identifier.
CITIES = (
    ("Springfield", "central"),
    ("Riverside", "west"),
    ("Franklin", "east"),
    ("Greenville", "south"),
    ("Bristol", "east"),
    ("Clinton", "central"),
    ("Fairview", "west"),
    ("Salem", "north"),
    ("Madison", "north"),
    ("Georgetown", "south"),
    ("Arlington", "east"),
    ("Ashland", "central"),
    ("Dover", "east"),
    ("Oxford", "north"),
    ("Jackson", "south"),
    ("Burlington", "north"),
    ("Manchester", "east"),
    ("Milton", "west"),
    ("Newport", "west"),
    ("Auburn", "south"),
)

EDUCATION = (("high_school", 0.35), ("bachelor", 0.4), ("master", 0.2), ("doctorate", 0.05))
MARITAL_STATUS = (("single", 0.42), ("married", 0.45), ("divorced", 0.1), ("widowed", 0.03))

PURPOSES = (
    ("debt_consolidation", 0.45),
    ("credit_card", 0.2),
    ("home_improvement", 0.1),
    ("car", 0.08),
    ("small_business", 0.05),
    ("medical", 0.05),
    ("other", 0.07),
)
# Appears only after --drift-from-day: the new product line behind the population shift.
DRIFT_PURPOSE = ("green_energy", 0.1)

# Extra log-odds of default per purpose.
PURPOSE_RISK = {
    "debt_consolidation": 0.1,
    "credit_card": 0.0,
    "home_improvement": -0.2,
    "car": -0.3,
    "small_business": 0.6,
    "medical": 0.3,
    "other": 0.2,
    "green_energy": 0.4,
}

HOME_OWNERSHIP = (("RENT", 0.45), ("MORTGAGE", 0.4), ("OWN", 0.13), ("OTHER", 0.02))
CHANNELS = (("web", 0.5), ("mobile", 0.25), ("branch", 0.15), ("broker", 0.1))
TERMS = ((36, 0.7), (60, 0.3))

# Employment length as lenders' forms record it; index = years (10 means ten or more).
EMPLOYMENT_LENGTHS = (
    "< 1 year",
    "1 year",
    "2 years",
    "3 years",
    "4 years",
    "5 years",
    "6 years",
    "7 years",
    "8 years",
    "9 years",
    "10+ years",
)
