-- One work cycle as pgbench runs it, statement for statement what taskyard's PostgreSQL backend
-- does at its core: claim the best ready task (FOR UPDATE SKIP LOCKED), record the claim, then a
-- fenced complete and its event. Each statement commits on its own: four commits a cycle.
\set holder random(1, 1000000)
UPDATE tasks SET status = 'in_progress', fence = fence + 1, attempts = attempts + 1,
       lease_holder = 'bench-' || :holder, lease_expires_at = taskyard_now_ms() + 300000,
       claimed_at = taskyard_now_ms(), updated_at = taskyard_now_ms()
 WHERE id = (SELECT id FROM tasks WHERE status = 'available' AND not_before <= taskyard_now_ms()
             ORDER BY priority, id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, fence \gset
INSERT INTO events (kind, task_id, actor, data, created_at)
VALUES ('task.claimed', :id, 'bench-' || :holder, '{"fence":' || :fence || '}', taskyard_now_ms());
UPDATE tasks SET status = 'completed', progress_percent = 100, lease_holder = NULL,
       lease_expires_at = NULL, completed_at = taskyard_now_ms(), updated_at = taskyard_now_ms()
 WHERE id = :id AND fence = :fence AND status = 'in_progress' AND lease_holder = 'bench-' || :holder;
INSERT INTO events (kind, task_id, actor, data, created_at)
VALUES ('task.completed', :id, 'bench-' || :holder, '{"fence":' || :fence || '}', taskyard_now_ms());
