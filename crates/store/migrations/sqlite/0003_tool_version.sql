-- A stack may pin its tool's exact version (e.g. 1.0.3): the launcher takes
-- that version from its tools directory and checks `<tool> version -json`.
ALTER TABLE stacks ADD COLUMN tool_version TEXT;
