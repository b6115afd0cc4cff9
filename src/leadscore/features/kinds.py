"""Built-in activity kinds with a role in the features (a source declares more)."""

# Explicit buying intent.
HAND_RAISER_TYPES = ("demo_request", "contact_sales", "trial_signup", "page_view_pricing")
# Kinds with a "days since the last one" feature of their own.
RECENCY_TYPES = ("page_view_pricing", "page_view_product", "page_view_docs", "demo_request", "contact_sales",
                 "trial_signup", "chat", "email_click")
# Negative signals: left out of the decay-weighted engagement.
NEGATIVE_TYPES = ("email_unsubscribe", "email_bounce")
