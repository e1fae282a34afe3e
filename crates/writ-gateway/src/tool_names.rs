//! MCP tool names across connectors: no two connectors may offer the same one.

use std::collections::BTreeMap;

use crate::config::ConnectorConfig;

/// Two connectors may not offer the same MCP tool name, as far as the configuration tells (an
/// HTTP connector's operations, an MCP upstream's `tools` list); names an upstream lists later are
/// checked when Writ lists its tools (a name two connectors offer is offered by neither).
pub(crate) fn check(connectors: &BTreeMap<String, ConnectorConfig>) -> Result<(), String> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    seen.insert("writ.action_status".into(), "writ");
    for (name, connector) in connectors {
        let names: Vec<String> = match connector {
            ConnectorConfig::Http(http) => http
                .operations
                .keys()
                .map(|op| format!("{name}.{op}"))
                .collect(),
            ConnectorConfig::Mcp(mcp) => mcp
                .tools
                .iter()
                .flatten()
                .map(|tool| mcp.tool_names.name(name, tool))
                .collect(),
        };
        for tool in names {
            if let Some(other) = seen.insert(tool.clone(), name) {
                return Err(format!(
                    "connectors {other} and {name} would both offer the MCP tool {tool:?}; \
                     set `tool_names = \"prefixed\"` (the default) on one of them"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mcp(toml: &str) -> ConnectorConfig {
        ConnectorConfig::Mcp(toml::from_str(toml).unwrap())
    }

    #[test]
    fn names_two_connectors_offer_are_refused() {
        let kept = "command = \"x\"\ntools = [\"search\", \"read\"]\ntool_names = \"upstream\"";
        let mut connectors = BTreeMap::new();
        connectors.insert("a".to_owned(), mcp(kept));
        connectors.insert("b".to_owned(), mcp("command = \"x\"\ntools = [\"search\"]"));
        assert_eq!(check(&connectors), Ok(()), "b's tools are b_search");
        connectors.insert("c".to_owned(), mcp(kept));
        let e = check(&connectors).unwrap_err();
        assert!(
            e.contains("connectors a and c") && e.contains("\"search\""),
            "{e}"
        );
        let mut connectors = BTreeMap::new();
        connectors.insert(
            "a".to_owned(),
            mcp("command = \"x\"\ntools = [\"b_c\"]\ntool_names = \"upstream\""),
        );
        connectors.insert("b".to_owned(), mcp("command = \"x\"\ntools = [\"c\"]"));
        assert!(check(&connectors).unwrap_err().contains("\"b_c\""));
    }
}
