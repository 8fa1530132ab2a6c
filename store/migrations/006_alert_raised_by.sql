-- The score event whose checkpoint raised the alert. Only that event (or its redelivery) sends
-- it: the learner projects several scores at once, and the others must not send it again while
-- it is recorded but not yet sent. Alerts recorded before this column: any score may send them.
ALTER TABLE regression_alerts ADD COLUMN raised_by text;
