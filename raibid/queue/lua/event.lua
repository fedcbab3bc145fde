-- Fragment: add a kind=job entry to the event stream (raibid.queue.events; MAXLEN agrees with
-- EVENTS_MAXLEN there): the job's new queue status, in the same step as the change itself, so the
-- reporter sees every transition, in order, exactly once.
local function job_event(key, job, status)
  redis.call('XADD', key, 'MAXLEN', '~', 100000, '*', 'kind', 'job', 'job', job, 'status', status)
end
