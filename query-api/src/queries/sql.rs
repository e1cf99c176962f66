//! [`Sql`]: a statement's text and its bound parameters, the unit every
//! query of the API is built as.

/// A bound parameter value: text (parsed by ClickHouse as the declared
/// type) or a list of strings (`Array(String)`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum Param {
    Text(String),
    List(Vec<String>),
}

/// A SQL text and its bound parameters.
#[derive(Debug, Clone, Default)]
pub struct Sql {
    pub text: String,
    pub params: Vec<(String, Param)>,
}

impl Sql {
    pub fn new(text: impl Into<String>) -> Self {
        Self { text: text.into(), params: Vec::new() }
    }
    pub fn bind(mut self, name: &str, value: impl ToString) -> Self {
        self.params.push((name.to_owned(), Param::Text(value.to_string())));
        self
    }
    pub fn bind_list(mut self, name: &str, values: Vec<String>) -> Self {
        self.params.push((name.to_owned(), Param::List(values)));
        self
    }
    pub fn bind_all(mut self, params: impl IntoIterator<Item = (impl Into<String>, String)>) -> Self {
        self.params.extend(params.into_iter().map(|(k, v)| (k.into(), Param::Text(v))));
        self
    }
    /// The query on `client` with every parameter bound.
    pub fn query(&self, client: &clickhouse::Client) -> clickhouse::query::Query {
        let mut q = client.query(&self.text);
        for (k, v) in &self.params {
            q = q.param(k, v);
        }
        q
    }
}
