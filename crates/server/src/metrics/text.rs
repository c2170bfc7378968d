//! OpenMetrics text (what prometheus-client writes) to the Prometheus text
//! format 0.0.4, for scrapers that do not ask for OpenMetrics and for
//! `promtool check metrics`. The differences that matter for the metrics
//! written here: a counter's family is named with `_total` in the older
//! format, `# UNIT` lines and the `# EOF` marker do not exist there, and
//! `unknown` is spelled `untyped`.

use std::collections::HashSet;

pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            if counters.contains(name) {
                Some(format!("{prefix}{name}_total {tail}"))
            } else if *prefix == "# TYPE " && tail == "unknown" {
                Some(format!("{prefix}{name} untyped"))
            } else {
                None
            }
        });
        match rewritten {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::prometheus_text;

    #[test]
    fn counters_take_their_total_suffix_and_openmetrics_only_lines_go() {
        let om = "# HELP gantry_runs_ended Runs ended.\n# TYPE gantry_runs_ended counter\n\
                  gantry_runs_ended_total{state=\"FINISHED\"} 2\n\
                  # HELP x_seconds Time.\n# TYPE x_seconds histogram\n# UNIT x_seconds seconds\n\
                  x_seconds_sum 1.0\n# TYPE odd unknown\nodd 1\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP gantry_runs_ended_total Runs ended.\n# TYPE gantry_runs_ended_total counter\n\
             gantry_runs_ended_total{state=\"FINISHED\"} 2\n\
             # HELP x_seconds Time.\n# TYPE x_seconds histogram\nx_seconds_sum 1.0\n\
             # TYPE odd untyped\nodd 1\n"
        );
    }
}
