-- Why a delivery failed for good, as the dispatcher decided it, next to `last_error` (its text for people):
-- `permanent` (the provider refused it), `unreachable` (refused because the address is gone: the citizen is then
-- deactivated) or `gave_up` (its attempts ran out: the job is dead-lettered), with the provider's code. A job
-- that comes back after a crash acts on these, never on the text.
ALTER TABLE deliveries
    ADD COLUMN failure_kind text CHECK (failure_kind IN ('permanent', 'unreachable', 'gave_up')),
    ADD COLUMN failure_code text;

-- Deliveries that failed before: classified from their text once, as the dispatcher read it until now.
UPDATE deliveries
   SET failure_kind = CASE
           WHEN last_error LIKE 'gave up after %' THEN 'gave_up'
           WHEN (channel = 'whatsapp' AND split_part(last_error, ':', 1) = '131026')
             OR (channel = 'telegram' AND (split_part(last_error, ':', 1) = '403'
                 OR (split_part(last_error, ':', 1) = '400' AND lower(last_error) LIKE '%chat not found%')))
             OR (channel = 'wechat' AND split_part(last_error, ':', 1) IN ('43004', '40003')) THEN 'unreachable'
           ELSE 'permanent' END,
       failure_code = CASE WHEN last_error LIKE 'gave up after %' THEN NULL
                           ELSE nullif(split_part(last_error, ':', 1), '') END
 WHERE state = 'failed' AND last_error IS NOT NULL AND position(':' IN last_error) > 0;
