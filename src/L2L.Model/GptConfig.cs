// GPT-2 model dimensions, the named presets, and config.json in Hugging Face's GPT-2 format.
using System.Text;
using System.Text.Json;

namespace L2L.Model;

/// <summary>
/// The dimensions of a GPT-2 model. Stored on disk as a Hugging Face GPT-2 <c>config.json</c>
/// (<c>vocab_size</c>, <c>n_positions</c>, <c>n_embd</c>, <c>n_layer</c>, <c>n_head</c>,
/// <c>layer_norm_epsilon</c>), so configs of real GPT-2 checkpoints load unchanged.
/// </summary>
/// <param name="VocabSize">Number of token ids (<c>vocab_size</c>); GPT-2's BPE has 50257.</param>
/// <param name="MaxPositions">Longest sequence the position embedding covers (<c>n_positions</c>).</param>
/// <param name="Channels">Width of the residual stream, C (<c>n_embd</c>).</param>
/// <param name="Layers">Number of transformer blocks, L (<c>n_layer</c>).</param>
/// <param name="Heads">Number of attention heads, NH (<c>n_head</c>); must divide <paramref name="Channels"/>.</param>
/// <param name="LayerNormEpsilon">Added to the variance inside every LayerNorm (<c>layer_norm_epsilon</c>).</param>
public sealed record GptConfig(int VocabSize, int MaxPositions, int Channels, int Layers, int Heads, float LayerNormEpsilon = 1e-5f) : IModelConfig
{
    /// <summary>The value of <c>model_type</c> in a GPT-2 config.</summary>
    public const string ModelType = "gpt2";

    string IModelConfig.ModelType => ModelType;

    /// <inheritdoc/>
    public TrainingObjective Objective => TrainingObjective.CausalLanguageModel;

    IModelConfig IModelConfig.WithLayers(int layers) => WithLayers(layers);

    IReadOnlyList<string> IModelConfig.Differences(IModelConfig other) =>
        other is GptConfig gpt ? Differences(gpt) : [ModelConfigs.TypeDifference(this, other)!];

    private static readonly (string Name, GptConfig Config)[] Presets =
    [
        // Small enough for the CPU accelerator and byte-level data (vocabulary 256).
        ("gpt2-tiny", new GptConfig(256, 128, 64, 4, 4)),
        ("gpt2", new GptConfig(50257, 1024, 768, 12, 12)),
        ("gpt2-medium", new GptConfig(50257, 1024, 1024, 24, 16)),
        ("gpt2-large", new GptConfig(50257, 1024, 1280, 36, 20)),
        ("gpt2-xl", new GptConfig(50257, 1024, 1600, 48, 25)),
    ];

    /// <summary>Channels per attention head, C / NH.</summary>
    public int HeadSize => Channels / Heads;

    /// <summary>The preset names accepted by <see cref="Preset"/>, smallest first.</summary>
    public static IReadOnlyList<string> PresetNames { get; } = Array.AsReadOnly(Presets.Select(p => p.Name).ToArray());

    /// <summary>
    /// Number of trainable parameters. The LM head shares its weight with the token embedding
    /// (<c>wte</c>), so it is counted once.
    /// </summary>
    public long ParameterCount
    {
        get
        {
            long c = Channels;
            var block = 12 * c * c + 13 * c;
            return (long)VocabSize * c + (long)MaxPositions * c + Layers * block + 2 * c;
        }
    }

    /// <summary>The named preset; <paramref name="name"/> is matched case-insensitively.</summary>
    /// <exception cref="ArgumentException">Unknown name; the message lists the presets.</exception>
    public static GptConfig Preset(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        foreach (var (presetName, config) in Presets)
            if (string.Equals(presetName, name.Trim(), StringComparison.OrdinalIgnoreCase))
                return config;
        throw new ArgumentException($"Unknown model preset '{name}'. Known presets: {string.Join(", ", PresetNames)}.", nameof(name));
    }

    /// <summary>Returns a copy with <paramref name="layers"/> transformer blocks.</summary>
    public GptConfig WithLayers(int layers) => this with { Layers = layers };

    /// <summary>
    /// Drop probabilities (Hugging Face <c>embd_pdrop</c>, <c>attn_pdrop</c>, <c>resid_pdrop</c>). Absent keys mean 0 here
    /// (Hugging Face's own default is 0.1, and its config files always write the keys).
    /// </summary>
    public Device.DropoutRates Dropout { get; init; } = Device.DropoutRates.None;

    /// <inheritdoc/>
    bool IModelConfig.SupportsDropout => true;

    /// <summary>
    /// A unit-scaled GPT-2 (<c>"unit_scaling": true</c>; absent means false): weights initialised N(0, 1) and fixed
    /// scale factors in every op's forward and backward so that activations and gradients have unit variance at
    /// initialisation (see <see cref="Gpt2.UnitScales"/>). It changes the model, not just how it is trained: a
    /// unit-scaled checkpoint only loads as a unit-scaled model.
    /// </summary>
    public bool UnitScaling { get; init; }

    /// <summary>Throws unless every size is positive and <see cref="Heads"/> divides <see cref="Channels"/>.</summary>
    /// <exception cref="InvalidDataException">The first problem found, naming the config key.</exception>
    public void Validate()
    {
        var problem = FindProblem();
        if (problem is not null) throw new InvalidDataException($"Invalid GPT-2 config: {problem}.");
    }

    private string? FindProblem()
    {
        if (VocabSize <= 0) return $"vocab_size must be positive, got {VocabSize}";
        if (MaxPositions <= 0) return $"n_positions must be positive, got {MaxPositions}";
        if (Channels <= 0) return $"n_embd must be positive, got {Channels}";
        if (Layers <= 0) return $"n_layer must be positive, got {Layers}";
        if (Heads <= 0) return $"n_head must be positive, got {Heads}";
        if (Channels % Heads != 0) return $"n_embd ({Channels}) must be a multiple of n_head ({Heads})";
        if (!float.IsFinite(LayerNormEpsilon) || LayerNormEpsilon <= 0) return $"layer_norm_epsilon must be a positive number, got {LayerNormEpsilon}";
        if (Dropout.Problem() is { } dropout) return dropout;
        if (UnitScaling && Dropout.Any) return "unit_scaling does not support dropout (embd_pdrop, attn_pdrop and resid_pdrop must be 0)";
        return null;
    }

    /// <summary>Reads a Hugging Face GPT-2 <c>config.json</c>; keys other than the six GPT-2 sizes, the drop rates and <c>unit_scaling</c> are ignored.</summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">Malformed JSON, or a key missing or invalid; the message names the file and the key.</exception>
    public static GptConfig Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Model config '{path}' not found.", path);
        return FromJson(File.ReadAllText(path), path);
    }

    /// <summary>Parses a Hugging Face GPT-2 config; <paramref name="source"/> names the origin in error messages.</summary>
    /// <remarks><c>layer_norm_epsilon</c> may be absent (it then defaults to 1e-5, as in Hugging Face); the other five keys are required.</remarks>
    /// <exception cref="InvalidDataException">Malformed JSON, or a key missing or invalid.</exception>
    public static GptConfig FromJson(string json, string source = "config")
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Model config '{source}' is not valid JSON: {e.Message}", e);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"Model config '{source}' must be a JSON object, found {root.ValueKind}.");
            if (root.TryGetProperty("model_type", out var modelType) && modelType.ValueKind == JsonValueKind.String && modelType.GetString() == "bert")
                throw new InvalidDataException($"Model config '{source}' is a BERT config (\"model_type\": \"bert\"), not a GPT-2 config; load it as a BERT model.");

            var config = new GptConfig(
                RequiredInt(root, "vocab_size", source),
                RequiredInt(root, "n_positions", source),
                RequiredInt(root, "n_embd", source),
                RequiredInt(root, "n_layer", source),
                RequiredInt(root, "n_head", source),
                OptionalFloat(root, "layer_norm_epsilon", source, 1e-5f))
            {
                Dropout = new(OptionalFloat(root, "embd_pdrop", source, 0f), OptionalFloat(root, "attn_pdrop", source, 0f),
                    OptionalFloat(root, "resid_pdrop", source, 0f)),
                UnitScaling = OptionalBool(root, UnitScalingKey, source),
            };
            var problem = config.FindProblem();
            if (problem is not null) throw new InvalidDataException($"Model config '{source}': {problem}.");
            return config;
        }
    }

    private static int RequiredInt(JsonElement root, string key, string source)
    {
        if (!root.TryGetProperty(key, out var value))
            throw new InvalidDataException($"Model config '{source}' is missing the key \"{key}\".");
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out var result))
            throw new InvalidDataException($"Model config '{source}': \"{key}\" must be an integer, found {value.GetRawText()}.");
        return result;
    }

    /// <summary>The config key of <see cref="UnitScaling"/>.</summary>
    public const string UnitScalingKey = "unit_scaling";

    private static bool OptionalBool(JsonElement root, string key, string source)
    {
        if (!root.TryGetProperty(key, out var value)) return false;
        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new InvalidDataException($"Model config '{source}': \"{key}\" must be true or false, found {value.GetRawText()}."),
        };
    }

    private static float OptionalFloat(JsonElement root, string key, string source, float fallback)
    {
        if (!root.TryGetProperty(key, out var value)) return fallback;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetDouble(out var result))
            throw new InvalidDataException($"Model config '{source}': \"{key}\" must be a number, found {value.GetRawText()}.");
        return (float)result;
    }

    /// <summary>The config as indented JSON with Hugging Face GPT-2 keys and <c>"model_type": "gpt2"</c>.</summary>
    public string ToJson()
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            writer.WriteStartObject();
            writer.WriteString("model_type", ModelType);
            writer.WriteNumber("vocab_size", VocabSize);
            writer.WriteNumber("n_positions", MaxPositions);
            writer.WriteNumber("n_embd", Channels);
            writer.WriteNumber("n_layer", Layers);
            writer.WriteNumber("n_head", Heads);
            writer.WriteNumber("layer_norm_epsilon", LayerNormEpsilon);
            if (Dropout.Any)
            {
                writer.WriteNumber("embd_pdrop", Dropout.Embedding);
                writer.WriteNumber("attn_pdrop", Dropout.Attention);
                writer.WriteNumber("resid_pdrop", Dropout.Residual);
            }
            // Written only when on, so standard configs stay byte-identical to Hugging Face's.
            if (UnitScaling) writer.WriteBoolean(UnitScalingKey, true);
            writer.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray()) + "\n";
    }

    /// <summary>Writes <see cref="ToJson"/> to <paramref name="path"/> atomically (temporary file, then rename).</summary>
    public void Save(string path) => AtomicFile.Write(path, stream => stream.Write(Encoding.UTF8.GetBytes(ToJson())));

    /// <summary>
    /// The Hugging Face keys whose values differ between this config and <paramref name="other"/>,
    /// as "key: this vs other" strings; empty when they describe the same model.
    /// </summary>
    public IReadOnlyList<string> Differences(GptConfig other)
    {
        ArgumentNullException.ThrowIfNull(other);
        var result = new List<string>();
        void Compare<T>(string key, T a, T b)
        {
            if (!EqualityComparer<T>.Default.Equals(a, b)) result.Add($"{key}: {a} vs {b}");
        }
        Compare("vocab_size", VocabSize, other.VocabSize);
        Compare("n_positions", MaxPositions, other.MaxPositions);
        Compare("n_embd", Channels, other.Channels);
        Compare("n_layer", Layers, other.Layers);
        Compare("n_head", Heads, other.Heads);
        Compare("layer_norm_epsilon", LayerNormEpsilon, other.LayerNormEpsilon);
        if (UnitScaling != other.UnitScaling)
            result.Add($"{UnitScalingKey}: {(UnitScaling ? "true" : "false")} vs {(other.UnitScaling ? "true" : "false")}");
        return result;
    }
}
