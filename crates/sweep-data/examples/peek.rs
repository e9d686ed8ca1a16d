fn main() {
    let cases = [
        r#"seed = "zero""#,
        r#"on_invalid_utf8 = "ignore""#,
        r#"tokenizer = "sentencepiece""#,
        r#"tokenizer = { fil = "x" }"#,
        r#"general = { type = "files", paths = "x" }"#,
        r#"general = "prose""#,
    ];
    for c in cases {
        let v: toml::Value = toml::from_str(c).unwrap();
        println!("{c}\n  -> {}", sweep_data::DataConfig::from_toml(v).unwrap_err());
    }
}
