"""Real words and names the fictional generator's syllables can spell, which it never uses as a name.

Built once from every whole-word token of the SmolLM2 tokenizer (about 25,000 common English words,
names and places) and a list of common first names, keeping those the syllable grammar of
`seal.domains.fictional` can produce; regenerate it if that grammar changes.
"""

BLOCKED = frozenset(
    """
    bake baker bali banana bananas bare baron basal base basel bases basil basin basis bates bathe before began
    begin begun belarus belize bene benevol benin bere beside besides beta bever biden bike bikes bile bipolar
    bison bite bites bone bones bonus bonuses bore boredom boris boron boston botan bother boto bovine brake
    brakes brave brazil breton bride brigade brine bristol broke broken broker brother bruno brutal brute brutus
    buses dakota dale damage damages dame dana danube dare data datas date dates dave davis debate debates debor
    debra debris dedu defe defend defer defin define defines degrade dele delete deli deliber delim deline
    deliver demand demise demo demol demon denis denise denom denote denotes depend depos dere deriv derive
    derives desire desires destabil deter deton detox devi devil devise devon devote digital dilem dilute dimin
    diplom diploma dipole dire disaster dise distal dive diver dives divide dividend divides divine divor dome
    domes domin donate done donor dora doris dosage dosages dose doses dove dover dozen dragan dragon drake
    drama dramas drive driven driver drives drone drones drove duke dunes fade fake fame famine fare faster
    fatal fate fateful father fatima favor federal feline felix female females femin femoral femur feral
    festival festive fetal fetus fever fiber fibre fibres fibro fibrosis figur figure figures file filepath
    files final fine finer fines finite fire firefox fires five folate forage fore fores forever forum foster
    fumes funeral fuse fuses futile future futures gaba galax gale galile game games ganes garage gases gate
    gates gather gave gaza gaze gelatin gemini gene gener genera general genes genesis geneva genital genome
    genomes genu genus gesture gestures gino gira gita give given gives giza gone goran gore gover grade grader
    grades gradu granite granul granular granules grape grapes grate grateful grave gravel graves graze grove
    groves guru gustav kabul kale kali kane kaplan karen karim karin kate kato katrina kepler kerala keras
    keratin keto kevin kiki kilogram kinase kira kiran kite kore kosovo kumar label labor labrador laden lake
    lakes lakota lama lamin lane lanes lapar lara laser late later lateral latex latin latino latinos lava
    lazarus leban lebanon legal legend legis legitim lego legumes lemon lena lenin lethal leve level lever levi
    levin levine liberal life lifes ligand like likes lima lime line linen liner lines lino linux lisa listen
    listener liter literal litres live liver lives lobe lobes logan logarith login logo logos lone lopez lore
    loren lose loses lotus love lover loves luke lumin luna lunar lupus lure lute luther lutheran madame made
    madison make maker makes male males mali mama manage manager manages manila manor manure maple marathon mare
    mari marin marina marine marines marisa marital mason master mate mater mates matrix mature matures maze
    medal medi medina mega megal megan melan melanin memes memo memor menu menus mere meta metabol metal metavar
    mete meter methane methanol metre metres metro midi migrate mika mike mila milan mile miles militar mine
    miner mineral mines mini minim minimal minimax minimum minister minor minus minute minutes mira mistake
    mistaken mistakes misuse mite mites mobil mobile modal mode model modem modes modular module modules modulus
    molar mole moles monaster monika monitor mono monopol monothe moral morale more moses mother motiv motive
    motives motor move moves mule mural musa muse mutate nadine nadu name names nano nanom naples napole nasa
    nasal natal nathan native natives nato natural nature naval nave nazareth nazi nazis nebraska nebul nebula
    negro nepal nero nether nevada never niger nike nile nina nine nino nitrate nitrates nitrite nitrogen nobel
    node nodes nodules nominal none nonex nora nose noses note notes notre nova novel novo numer nure nutri
    pagan page pages pakistan palate pale pamela panama pane panel panor papal paper para parade parades paradox
    paragu param paran paras paren paris paso pasta paste pastime pastor pastoral pasture pastures patagon patel
    pathogen patri patrol patron pave paves pedal pedro penal penis pere peri peril peru pete peter petrol pige
    pike pilate pile piles pine pines pipe pipes pirate pirates pistol piston pitu pivotal plane planes plaster
    plate plates platinum plato plaza plethora plugin plumage plume plumes plural pluto poke poker poland polar
    pole poles polite polo pomegran pope popul popular pore pores pose poses postage postal poster posture
    postures potato pulumi pupil pure puritan putin radar radi radon rage rake rama ramadan raman rami rape rare
    rarer raster rate rates rather raven ravi razor rebel rede redes redis redox redu redund refer refere
    referen referend refin refine refuge refund refusal refuse refuses refute regen regener regex regim regime
    regimen regimes register regul regular relate relates relax rele remark remedi remem remind reminis remote
    remov removal remove removes remun remus renal rename rene renov repatri repe repel reper replen repo repos
    repur rese reside resides resin resistor resize resol reson restore resume resumes resur retal retin retina
    retinal retire retro retros reve revel reven rever revere reverend revis revise revital revival revive revol
    ride rider rides rigor rina ripe ripen rise risen rises rite rites rival river rivera robe rober robes robin
    rode roger roland role roles roma roman rome romulus rope ropes rosa rose rosen roses rotate rotates rotor
    rover rude rule ruler rules rural sabrina safari safe safegu safer saga sage sages sake salam sale salem
    sales salim saline saliva salon samar same sami samir sana sara saras satan satire satis sato savage save
    saves selena semen semester semi semin seminal seminar senate senator senegal separ seren serena serene
    serum sesame seven sever several severe side sides similar simon sine sinister sinus sinuses sire siri
    sister sita site sites situ size sizes skate skates skeletal skeleton sober soda sodas solar sole soles solo
    solomon solon somali some sonar sore sores sovere stabil stage stages stake stakes stalin stamina staple
    staples stare state states stature status statute statutes stefan stenosis stere steril sterile steve steven
    stimul stimuli stimulus stole stolen stone stones storage store stores stove stoves sudan sudo sufi sugar
    sumatra sunil super sure susan take taken takes tale tales taliban tamara tame tamil tanaka tape taper tapes
    tara taste tastes tate tele telome tenure teresa tester testes testim tetanus tetra thames thebes theme
    themes thera there theresa these theses thesis theta thomas those tiber tibetan tidal tide tides tiger tile
    tiles time timer times timor tina tire tires titan tito titus todo tofu together token toledo toler tomas
    tomaso tomato tonal tone tones toni total trade tradem trademark trader trades travel traveler tremend
    tremor tribal tribe tribes tribunal tribune tribute trigon trimes trimester triple tropes trove truman tube
    tuber tubes tubular tudor tumor tuna tune tunes tunis tuple tuples tutor vagina vaginal vagu valor valu
    vapor vari vase vedas vegan vegas vene venez venom venus vera veter veteran veterin veto vibrate vide vigil
    vigor vikram vine vinegar vines viral virus viruses visa visas visitor vista vital vitamin vitro vivo volume
    volumes vote voter votes zara zebra zeno zero zeros zika zone zones zoran zoro
    """.split()
)
