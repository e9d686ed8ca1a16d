fn main() {
    for lang in sweep_data::Language::ALL {
        let a = lang.automaton();
        println!("{lang}: states {} emissions {} {:?}", a.state_count(), a.emission_count(), a.entropy_rate());
        println!("{}", a.sample_text(1, 1500));
    }
}
