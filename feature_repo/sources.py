"""Stream sources: Kafka topics whose Avro schemas are the checked-in event contracts.

The schema text is read from featurestream's ``.avsc`` files, never restated here.
"""

import json
from datetime import timedelta

from feast import FileSource, KafkaSource
from feast.data_format import AvroFormat, ParquetFormat

from featurestream.events import contract_for_topic

# Events later than the source's watermark minus this are not applied online.
ALLOWED_LATENESS = timedelta(seconds=30)


def _avro(topic: str) -> AvroFormat:
    return AvroFormat(schema_json=json.dumps(contract_for_topic(topic).schema_json))


def _kafka_source(topic: str, description: str) -> KafkaSource:
    return KafkaSource(
        name=topic,
        topic=topic,
        timestamp_field="event_time",
        message_format=_avro(topic),
        watermark_delay_threshold=ALLOWED_LATENESS,
        batch_source=FileSource(
            name=f"{topic}_log",
            path=f"data/offline/{topic}",
            file_format=ParquetFormat(),
            timestamp_field="event_time",
        ),
        description=description,
    )


clicks_source = _kafka_source("clicks", "Click events (featurestream.events.Click).")
impressions_source = _kafka_source(
    "impressions", "Impression events (featurestream.events.Impression)."
)
purchases_source = _kafka_source("purchases", "Purchase events (featurestream.events.Purchase).")
