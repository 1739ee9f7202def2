-- 0006_engines: which inference engine produced each label, and which one each version serves with.
-- Export chooses an engine per version by measurement (models/engines); analysts need it beside the
-- model version and adapter on every label row. Old rows read '' (served before engines existed).

ALTER TABLE labels ADD COLUMN engine String DEFAULT '';

ALTER TABLE model_versions ADD COLUMN engine String DEFAULT '';
