-- Runs of agent types with `isolation = "worktree"` work in a git worktree of their own, on a
-- branch of their own. The branch outlives the run: what it held when the run ended is kept here.

ALTER TABLE runs ADD COLUMN repo TEXT;              -- the repository the worktree belongs to
ALTER TABLE runs ADD COLUMN worktree TEXT;          -- the worktree's folder (removed when the run ends)
ALTER TABLE runs ADD COLUMN branch TEXT;            -- the branch made for the run
ALTER TABLE runs ADD COLUMN base TEXT;              -- the commit the branch started from
ALTER TABLE runs ADD COLUMN branch_head TEXT;       -- the commit the branch pointed at when the run ended
ALTER TABLE runs ADD COLUMN branch_commits INTEGER; -- commits on the branch beyond base then
