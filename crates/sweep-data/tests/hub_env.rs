//! Hub settings come from the environment variables the Hugging Face libraries read. (Its own
//! test binary: it sets process-wide variables.)

use std::path::PathBuf;

use sweep_data::HubSettings;

#[test]
fn hub_settings_follow_the_hugging_face_variables() {
    for name in ["HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT", "HF_HUB_OFFLINE"] {
        std::env::remove_var(name);
    }
    std::env::set_var("HOME", "/home/someone");
    let s = HubSettings::from_env();
    assert_eq!(s.endpoint, "https://huggingface.co");
    assert_eq!(s.cache_dir, PathBuf::from("/home/someone/.cache/huggingface/hub"));
    assert!(!s.offline);

    std::env::set_var("HF_HOME", "/data/hf");
    std::env::set_var("HF_ENDPOINT", "http://mirror.local:8080");
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let s = HubSettings::from_env();
    assert_eq!(s.cache_dir, PathBuf::from("/data/hf/hub"));
    assert_eq!(s.endpoint, "http://mirror.local:8080");
    assert!(s.offline);

    std::env::set_var("HF_HUB_CACHE", "/fast/hub");
    std::env::set_var("HF_HUB_OFFLINE", "0");
    let s = HubSettings::from_env();
    assert_eq!(s.cache_dir, PathBuf::from("/fast/hub"));
    assert!(!s.offline);
}
