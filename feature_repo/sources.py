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


clicks_source = KafkaSource(
    name="clicks",
    topic="clicks",
    timestamp_field="event_time",
    message_format=_avro("clicks"),
    watermark_delay_threshold=ALLOWED_LATENESS,
    batch_source=FileSource(
        name="clicks_log",
        path="data/offline/clicks",
        file_format=ParquetFormat(),
        timestamp_field="event_time",
    ),
    description="Click events (featurestream.events.Click).",
)
