//! MCP tool names and the actions they stand for.
//!
//! Each connector names its operations for MCP clients ([`Connector::tool_name`]: an MCP
//! upstream's `tool_names`, `<connector>.<operation>` otherwise); the action policy sees is always
//! `<connector>.<operation>`. A name that two connectors offer is offered by neither and calling
//! it is refused: Writ never guesses which system a call was meant for.

use std::collections::BTreeMap;

use rmcp::ErrorData;
use serde_json::json;
use writ_connectors::{Connector, OperationInfo};
use writ_gateway::Gateway;

use super::STATUS_TOOL;

/// The connector and operation MCP tool `tool` stands for, or the error an unknown or ambiguous
/// name gets (JSON-RPC -32602, as the specification and the SDKs answer an unknown tool).
pub(super) fn resolve(gw: &Gateway, tool: &str) -> Result<(String, String), ErrorData> {
    let mut found = gw
        .connectors()
        .iter()
        .filter_map(|(name, c)| Some((name.clone(), c.operation_of_tool(tool)?)));
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(unknown(tool)),
        (Some((a, _)), Some((b, _))) => Err(ErrorData::invalid_params(
            format!(
                "Unknown tool: {tool} is the name of a tool of both {a} and {b}, so neither is offered; \
                 an operator sets `tool_names = \"prefixed\"` on one of them in writ.toml"
            ),
            Some(json!({"tool": tool, "connectors": [a, b]})),
        )),
    }
}

pub(super) fn unknown(tool: &str) -> ErrorData {
    ErrorData::invalid_params(format!("Unknown tool: {tool}"), Some(json!({"tool": tool})))
}

/// Every operation of `connectors` with its MCP name, except those whose name another connector
/// (or Writ's own `writ.action_status`) also offers: those are logged and left out.
pub(super) fn offered(
    connectors: &BTreeMap<String, std::sync::Arc<dyn Connector>>,
) -> Vec<(String, String, OperationInfo)> {
    let mut all: Vec<(String, String, OperationInfo)> = Vec::new();
    let mut count: BTreeMap<String, Vec<String>> = BTreeMap::new();
    count.insert(STATUS_TOOL.to_owned(), vec!["writ".to_owned()]);
    for (name, c) in connectors {
        for op in c.operations() {
            let tool = c.tool_name(&op.name);
            count.entry(tool.clone()).or_default().push(name.clone());
            all.push((tool, name.clone(), op));
        }
    }
    all.retain(|(tool, _, _)| {
        let Some(by) = count.get(tool) else {
            return false;
        };
        if by.len() > 1 {
            tracing::error!(tool = %tool, connectors = ?by, "MCP tool name offered by more than one connector: offered by none; set `tool_names = \"prefixed\"` on one of them");
        }
        by.len() == 1
    });
    all
}
