// BERT (masked-language-model) dimensions, the named presets, and config.json in Hugging Face's BERT format.
using System.Text;
using System.Text.Json;

namespace L2L.Model.Bert;

/// <summary>
/// The dimensions of a BERT masked language model (Hugging Face <c>BertForMaskedLM</c>). Stored on
/// disk as a Hugging Face BERT <c>config.json</c> (<c>"model_type": "bert"</c>), so configs of real
/// BERT checkpoints load unchanged.
/// </summary>
/// <param name="VocabSize">Number of token ids (<c>vocab_size</c>); BERT's WordPiece has 30522.</param>
/// <param name="HiddenSize">Width of the residual stream, H (<c>hidden_size</c>).</param>
/// <param name="Layers">Number of encoder blocks, L (<c>num_hidden_layers</c>).</param>
/// <param name="Heads">Number of attention heads (<c>num_attention_heads</c>); must divide <paramref name="HiddenSize"/>.</param>
/// <param name="IntermediateSize">Width of the feed-forward layer, I (<c>intermediate_size</c>); 4H in the published models.</param>
/// <param name="MaxPositions">Longest sequence the position embedding covers (<c>max_position_embeddings</c>).</param>
/// <param name="TypeVocabSize">Number of token types, i.e. segments (<c>type_vocab_size</c>).</param>
/// <param name="LayerNormEpsilon">Added to the variance inside every LayerNorm (<c>layer_norm_eps</c>).</param>
/// <param name="PadTokenId">Token id of padding (<c>pad_token_id</c>): never attended to, never masked for training.</param>
/// <param name="MaskTokenId">Token id of <c>[MASK]</c> (<c>mask_token_id</c>), written over most positions chosen for masked-language-model training.</param>
public sealed partial record BertConfig(
    int VocabSize,
    int HiddenSize,
    int Layers,
    int Heads,
    int IntermediateSize,
    int MaxPositions,
    int TypeVocabSize,
    float LayerNormEpsilon = 1e-12f,
    int PadTokenId = 0,
    int MaskTokenId = 103)
{
    /// <summary>The value of <c>model_type</c> in a BERT config.</summary>
    public const string ModelType = "bert";

    /// <summary>The only activation the engine implements: exact (erf) GELU, Hugging Face's <c>"gelu"</c>.</summary>
    public const string HiddenAct = "gelu";

    private static readonly (string Name, BertConfig Config)[] Presets =
    [
        // Small enough for the CPU accelerator. Its vocabulary covers the 256 byte symbols of raw text
        // and the built-in corpus, with padding and [MASK] placed above them (256, 257), because
        // symbol 0 is common there and must not be mistaken for padding.
        ("bert-tiny", new BertConfig(260, 64, 2, 4, 256, 128, 2, 1e-12f, PadTokenId: 256, MaskTokenId: 257)),
        ("bert-base", new BertConfig(30522, 768, 12, 12, 3072, 512, 2)),
        ("bert-large", new BertConfig(30522, 1024, 24, 16, 4096, 512, 2)),
    ];

    /// <summary>Channels per attention head, H / heads.</summary>
    public int HeadSize => HiddenSize / Heads;

    /// <summary>The preset names accepted by <see cref="Preset"/>, smallest first.</summary>
    public static IReadOnlyList<string> PresetNames { get; } = Array.AsReadOnly(Presets.Select(p => p.Name).ToArray());

    /// <inheritdoc/>
    /// <remarks>Hidden dropout comes from <c>--dropout</c> only; the config's dropout keys are not read.</remarks>
    bool IModelConfig.SupportsDropout => true;

    /// <summary>
    /// Number of trainable parameters of <c>BertForMaskedLM</c> (no pooler; the decoder weight is tied
    /// to the word embedding, so it is counted once):
    /// embeddings (V + P + types)·H + 2H, each block 4H² + 2HI + 9H + I, head H² + 3H + V.
    /// </summary>
    public long ParameterCount
    {
        get
        {
            long h = HiddenSize, i = IntermediateSize;
            var embeddings = ((long)VocabSize + MaxPositions + TypeVocabSize) * h + 2 * h;
            // Query, key, value and output projections with biases (4H² + 4H), two LayerNorms (4H),
            // intermediate H→I with bias (HI + I), output I→H with bias (IH + H).
            var block = 4 * h * h + 2 * h * i + 9 * h + i;
            // Transform dense with bias, its LayerNorm, and the decoder's own bias.
            var head = h * h + 3 * h + VocabSize;
            return embeddings + Layers * block + head;
        }
    }

    /// <summary>The named preset; <paramref name="name"/> is matched case-insensitively.</summary>
    /// <exception cref="ArgumentException">Unknown name; the message lists the presets.</exception>
    public static BertConfig Preset(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        foreach (var (presetName, config) in Presets)
            if (string.Equals(presetName, name.Trim(), StringComparison.OrdinalIgnoreCase))
                return config;
        throw new ArgumentException($"Unknown model preset '{name}'. Known presets: {string.Join(", ", PresetNames)}.", nameof(name));
    }

    /// <summary>Returns a copy with <paramref name="layers"/> encoder blocks.</summary>
    public BertConfig WithLayers(int layers) => this with { Layers = layers };

    /// <summary>Throws unless every size is positive, <see cref="Heads"/> divides <see cref="HiddenSize"/> and the special token ids are in the vocabulary.</summary>
    /// <exception cref="InvalidDataException">The first problem found, naming the config key.</exception>
    public void Validate()
    {
        var problem = FindProblem();
        if (problem is not null) throw new InvalidDataException($"Invalid BERT config: {problem}.");
    }

    private string? FindProblem()
    {
        if (VocabSize <= 0) return $"vocab_size must be positive, got {VocabSize}";
        if (HiddenSize <= 0) return $"hidden_size must be positive, got {HiddenSize}";
        if (Layers <= 0) return $"num_hidden_layers must be positive, got {Layers}";
        if (Heads <= 0) return $"num_attention_heads must be positive, got {Heads}";
        if (HiddenSize % Heads != 0) return $"hidden_size ({HiddenSize}) must be a multiple of num_attention_heads ({Heads})";
        if (IntermediateSize <= 0) return $"intermediate_size must be positive, got {IntermediateSize}";
        if (MaxPositions <= 0) return $"max_position_embeddings must be positive, got {MaxPositions}";
        if (TypeVocabSize <= 0) return $"type_vocab_size must be positive, got {TypeVocabSize}";
        if (!float.IsFinite(LayerNormEpsilon) || LayerNormEpsilon <= 0) return $"layer_norm_eps must be a positive number, got {LayerNormEpsilon}";
        if (PadTokenId < 0 || PadTokenId >= VocabSize) return $"pad_token_id ({PadTokenId}) must be a token id below vocab_size ({VocabSize})";
        if (MaskTokenId < 0 || MaskTokenId >= VocabSize) return $"mask_token_id ({MaskTokenId}) must be a token id below vocab_size ({VocabSize})";
        if (MaskTokenId == PadTokenId) return $"mask_token_id and pad_token_id must differ, both are {PadTokenId}";
        return null;
    }

    /// <summary>Reads a Hugging Face BERT <c>config.json</c>; keys other than those of <see cref="BertConfig"/> are ignored.</summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">Malformed JSON, not a BERT config, or a key missing or invalid; the message names the file and the key.</exception>
    public static BertConfig Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Model config '{path}' not found.", path);
        return FromJson(File.ReadAllText(path), path);
    }

    /// <summary>Parses a Hugging Face BERT config; <paramref name="source"/> names the origin in error messages.</summary>
    /// <remarks>
    /// <c>model_type</c> must be <c>"bert"</c>. The seven sizes are required; <c>layer_norm_eps</c>
    /// (1e-12), <c>hidden_act</c> (<c>"gelu"</c>, the only one accepted), <c>pad_token_id</c> (0) and
    /// <c>mask_token_id</c> (103) default as shown when absent.
    /// </remarks>
    /// <exception cref="InvalidDataException">Malformed JSON, not a BERT config, or a key missing or invalid.</exception>
    public static BertConfig FromJson(string json, string source = "config")
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

            // Checked first so that a GPT-2 config gets this message rather than "missing hidden_size".
            var modelType = root.TryGetProperty("model_type", out var typeValue) ? typeValue.GetRawText() : null;
            if (typeValue.ValueKind != JsonValueKind.String || typeValue.GetString() != ModelType)
                throw new InvalidDataException(
                    $"Model config '{source}' is not a BERT config: \"model_type\" is {modelType ?? "absent"}, expected \"{ModelType}\". " +
                    "Give a Hugging Face BertForMaskedLM config.json, or a GPT-2 model for a GPT-2 config.");

            var act = OptionalString(root, "hidden_act", source, HiddenAct);
            if (act != HiddenAct)
                throw new InvalidDataException($"Model config '{source}': \"hidden_act\" must be \"{HiddenAct}\" (exact erf GELU, the only activation implemented), found \"{act}\".");

            var config = new BertConfig(
                RequiredInt(root, "vocab_size", source),
                RequiredInt(root, "hidden_size", source),
                RequiredInt(root, "num_hidden_layers", source),
                RequiredInt(root, "num_attention_heads", source),
                RequiredInt(root, "intermediate_size", source),
                RequiredInt(root, "max_position_embeddings", source),
                RequiredInt(root, "type_vocab_size", source),
                OptionalFloat(root, "layer_norm_eps", source, 1e-12f),
                OptionalInt(root, "pad_token_id", source, 0),
                OptionalInt(root, "mask_token_id", source, 103));
            var problem = config.FindProblem();
            if (problem is not null) throw new InvalidDataException($"Model config '{source}': {problem}.");
            return config;
        }
    }

    private static int RequiredInt(JsonElement root, string key, string source)
    {
        if (!root.TryGetProperty(key, out var value))
            throw new InvalidDataException($"Model config '{source}' is missing the key \"{key}\".");
        return AsInt(value, key, source);
    }

    private static int OptionalInt(JsonElement root, string key, string source, int fallback)
        => root.TryGetProperty(key, out var value) ? AsInt(value, key, source) : fallback;

    private static int AsInt(JsonElement value, string key, string source)
    {
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out var result))
            throw new InvalidDataException($"Model config '{source}': \"{key}\" must be an integer, found {value.GetRawText()}.");
        return result;
    }

    private static float OptionalFloat(JsonElement root, string key, string source, float fallback)
    {
        if (!root.TryGetProperty(key, out var value)) return fallback;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetDouble(out var result))
            throw new InvalidDataException($"Model config '{source}': \"{key}\" must be a number, found {value.GetRawText()}.");
        return (float)result;
    }

    private static string OptionalString(JsonElement root, string key, string source, string fallback)
    {
        if (!root.TryGetProperty(key, out var value)) return fallback;
        if (value.ValueKind != JsonValueKind.String)
            throw new InvalidDataException($"Model config '{source}': \"{key}\" must be a string, found {value.GetRawText()}.");
        return value.GetString()!;
    }

    /// <summary>The config as indented JSON with Hugging Face BERT keys, <c>"model_type": "bert"</c> and <c>"hidden_act": "gelu"</c>.</summary>
    public string ToJson()
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            writer.WriteStartObject();
            writer.WriteString("model_type", ModelType);
            writer.WriteStartArray("architectures");
            writer.WriteStringValue("BertForMaskedLM");
            writer.WriteEndArray();
            writer.WriteNumber("vocab_size", VocabSize);
            writer.WriteNumber("hidden_size", HiddenSize);
            writer.WriteNumber("num_hidden_layers", Layers);
            writer.WriteNumber("num_attention_heads", Heads);
            writer.WriteNumber("intermediate_size", IntermediateSize);
            writer.WriteNumber("max_position_embeddings", MaxPositions);
            writer.WriteNumber("type_vocab_size", TypeVocabSize);
            writer.WriteNumber("layer_norm_eps", LayerNormEpsilon);
            writer.WriteString("hidden_act", HiddenAct);
            writer.WriteNumber("pad_token_id", PadTokenId);
            writer.WriteNumber("mask_token_id", MaskTokenId);
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
    public IReadOnlyList<string> Differences(BertConfig other)
    {
        ArgumentNullException.ThrowIfNull(other);
        var result = new List<string>();
        void Compare<T>(string key, T a, T b)
        {
            if (!EqualityComparer<T>.Default.Equals(a, b)) result.Add($"{key}: {a} vs {b}");
        }
        Compare("vocab_size", VocabSize, other.VocabSize);
        Compare("hidden_size", HiddenSize, other.HiddenSize);
        Compare("num_hidden_layers", Layers, other.Layers);
        Compare("num_attention_heads", Heads, other.Heads);
        Compare("intermediate_size", IntermediateSize, other.IntermediateSize);
        Compare("max_position_embeddings", MaxPositions, other.MaxPositions);
        Compare("type_vocab_size", TypeVocabSize, other.TypeVocabSize);
        Compare("layer_norm_eps", LayerNormEpsilon, other.LayerNormEpsilon);
        Compare("pad_token_id", PadTokenId, other.PadTokenId);
        Compare("mask_token_id", MaskTokenId, other.MaskTokenId);
        return result;
    }
}
