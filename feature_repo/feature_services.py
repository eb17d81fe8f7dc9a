"""Feature services: the feature sets models are trained and served with."""

from batch_views import item_features, user_profile
from feast import FeatureService
from on_demand import ctr_1h, price_vs_user_avg, seconds_since_last_click, spend_per_purchase_24h
from user_click_stats import user_click_stats
from user_purchase_stats import user_purchase_stats

recommender_v1 = FeatureService(
    name="recommender_v1",
    features=[
        user_click_stats[["clicks_last_5min", "clicks_last_1h", "distinct_items_1h"]],
        user_profile[["country", "segment"]],
        item_features,
        ctr_1h,
        seconds_since_last_click,
    ],
    owner="recsys@featurestream.dev",
    description="Item recommendations: recent activity, profile, item and request context.",
    tags={"model": "recommender", "version": "1", "pii": "true"},
)

fraud_v1 = FeatureService(
    name="fraud_v1",
    features=[
        user_purchase_stats,
        user_click_stats[["clicks_last_5min"]],
        user_profile[["country", "age", "signup_date"]],
        spend_per_purchase_24h,
        price_vs_user_avg,
    ],
    owner="fraud@featurestream.dev",
    description="Payment fraud scoring: purchase velocity and amounts against the user's habits.",
    tags={"model": "fraud", "version": "1", "pii": "true"},
)
