// What every model config offers the engine, and loading any config by its "model_type".
using System.Text.Json;
using L2L.Model.Bert;

namespace L2L.Model;

/// <summary>What a model learns to predict, which decides how training windows and targets are cut.</summary>
public enum TrainingObjective
{
    /// <summary>Next-token prediction: targets are the inputs shifted by one (GPT-2).</summary>
    CausalLanguageModel,

    /// <summary>Masked-token prediction: targets at masked positions only, no shift (BERT).</summary>
    MaskedLanguageModel,
}

/// <summary>
/// The dimensions every model shares, as the executors, the checkpoint code and the CLI see them.
/// <see cref="GptConfig"/> and <see cref="BertConfig"/> implement it; model-specific sizes stay on them.
/// </summary>
public interface IModelConfig
{
    /// <summary>Hugging Face <c>model_type</c>: <c>gpt2</c> or <c>bert</c>.</summary>
    string ModelType { get; }

    /// <summary>What the model is trained to predict.</summary>
    TrainingObjective Objective { get; }

    /// <summary>Number of token ids, V.</summary>
    int VocabSize { get; }

    /// <summary>Longest sequence the position embedding covers.</summary>
    int MaxPositions { get; }

    /// <summary>Width of the residual stream, C: a layer boundary holds (N, C) floats.</summary>
    int Channels { get; }

    /// <summary>Number of transformer blocks, L.</summary>
    int Layers { get; }

    /// <summary>Number of attention heads, NH.</summary>
    int Heads { get; }

    /// <summary>Number of trainable parameters (tied weights counted once).</summary>
    long ParameterCount { get; }

    /// <summary>Throws <see cref="InvalidDataException"/> naming the first invalid key.</summary>
    void Validate();

    /// <summary>The config as Hugging Face <c>config.json</c> text.</summary>
    string ToJson();

    /// <summary>Writes <see cref="ToJson"/> to <paramref name="path"/> atomically.</summary>
    void Save(string path);

    /// <summary>The same model with <paramref name="layers"/> blocks.</summary>
    IModelConfig WithLayers(int layers);

    /// <summary>The keys that differ from <paramref name="other"/> ("key: this vs other"); a model type mismatch is one entry.</summary>
    IReadOnlyList<string> Differences(IModelConfig other);

    /// <summary>The dropout rates the config asks for (none unless the model has dropout call sites).</summary>
    Device.DropoutRates Dropout => Device.DropoutRates.None;

    /// <summary>Whether the model's layers apply dropout.</summary>
    bool SupportsDropout => false;
}

/// <summary>Finds a model config by preset name or reads one from <c>config.json</c>, whatever its model type.</summary>
public static class ModelConfigs
{
    /// <summary>Every preset name, GPT-2's then BERT's.</summary>
    public static IReadOnlyList<string> PresetNames { get; } = Array.AsReadOnly(GptConfig.PresetNames.Concat(BertConfig.PresetNames).ToArray());

    /// <summary>The preset <paramref name="name"/> (<c>gpt2-tiny</c>, <c>bert-tiny</c>, …), case-insensitive.</summary>
    /// <exception cref="ArgumentException">Unknown name; the message lists every preset.</exception>
    public static IModelConfig Preset(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var trimmed = name.Trim();
        if (GptConfig.PresetNames.Contains(trimmed, StringComparer.OrdinalIgnoreCase)) return GptConfig.Preset(trimmed);
        if (BertConfig.PresetNames.Contains(trimmed, StringComparer.OrdinalIgnoreCase)) return BertConfig.Preset(trimmed);
        throw new ArgumentException($"Unknown model preset '{name}'. Known presets: {string.Join(", ", PresetNames)}.", nameof(name));
    }

    /// <summary>Reads a <c>config.json</c>: <c>"model_type": "bert"</c> is BERT; <c>"gpt2"</c> or no <c>model_type</c> is GPT-2.</summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">Malformed, of an unsupported model type, or a key missing or invalid.</exception>
    public static IModelConfig Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Model config '{path}' not found.", path);
        return FromJson(File.ReadAllText(path), path);
    }

    /// <summary>Parses a config, dispatching on <c>model_type</c>; <paramref name="source"/> names the origin in errors.</summary>
    public static IModelConfig FromJson(string json, string source = "config")
    {
        ArgumentNullException.ThrowIfNull(json);
        string? type = null;
        try
        {
            using var document = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            if (document.RootElement.ValueKind == JsonValueKind.Object && document.RootElement.TryGetProperty("model_type", out var value))
                type = value.ValueKind == JsonValueKind.String ? value.GetString() : value.GetRawText();
        }
        catch (JsonException)
        {
            // GptConfig.FromJson reports malformed JSON with the file name.
        }
        return type switch
        {
            null or GptConfig.ModelType => GptConfig.FromJson(json, source),
            BertConfig.ModelType => BertConfig.FromJson(json, source),
            _ => throw new InvalidDataException($"Model config '{source}' has \"model_type\": \"{type}\"; supported model types are \"{GptConfig.ModelType}\" and \"{BertConfig.ModelType}\"."),
        };
    }

    /// <summary>Model-type mismatch as a <see cref="IModelConfig.Differences"/> entry, or null when both are the same type.</summary>
    internal static string? TypeDifference(IModelConfig a, IModelConfig b) =>
        a.ModelType == b.ModelType ? null : $"model_type: {a.ModelType} vs {b.ModelType}";
}
