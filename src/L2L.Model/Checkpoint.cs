// Checkpoint directories: config.json + model.safetensors (Hugging Face GPT-2 or BERT names) + optional training state.
using System.Globalization;
using System.Text.RegularExpressions;

namespace L2L.Model;

/// <summary>Optimizer progress saved beside the model so training can resume on the same trajectory.</summary>
/// <param name="Step">Number of optimizer steps taken.</param>
/// <param name="Optimizer">Optimizer name, e.g. <c>adamw</c>.</param>
/// <param name="StateFloatsPerParam">Optimizer floats per parameter (2 for Adam's moments; 0 for plain SGD).</param>
/// <param name="LayerStates">
/// One array per layer of the <see cref="ModelLayout"/>, each <see cref="StateFloatsPerParam"/> ×
/// the layer's length (empty arrays when <see cref="StateFloatsPerParam"/> is 0); the optimizer
/// decides how its floats are arranged inside.
/// </param>
/// <param name="Metadata">Further string pairs (schedule position, data position, RNG seeds, …).</param>
public sealed record TrainingState(long Step, string Optimizer, int StateFloatsPerParam, float[][] LayerStates, IReadOnlyDictionary<string, string> Metadata);

/// <summary>
/// Saves and loads checkpoint directories. A directory holds <see cref="ConfigFile"/> (a Hugging Face
/// config whose <c>model_type</c> says which model it is), <see cref="ModelFile"/> (Hugging Face tensor
/// names, F32: GPT-2's with [in, out] Conv1D weights, or <c>BertForMaskedLM</c>'s with PyTorch Linear
/// [out, in] weights) and, when training state is saved, <see cref="StateFile"/>.
/// </summary>
/// <remarks>
/// BERT checkpoints load with or without the <c>bert.</c> prefix on the encoder's tensors, and with
/// or without <c>cls.predictions.decoder.weight</c> (the decoder is tied to the word embedding, so it is
/// not read); pooler and next-sentence tensors of pre-training checkpoints are skipped.
/// </remarks>
public static partial class Checkpoint
{
    /// <summary>Model weights file name.</summary>
    public const string ModelFile = "model.safetensors";

    /// <summary>Model config file name.</summary>
    public const string ConfigFile = "config.json";

    /// <summary>Training state file name.</summary>
    public const string StateFile = "training_state.safetensors";

    private const string StepKey = "step", OptimizerKey = "optimizer", StateFloatsKey = "state_floats", FormatKey = "format";

    /// <summary>
    /// Writes a checkpoint to <paramref name="dir"/>, replacing the whole directory atomically:
    /// everything is written and flushed into a fresh directory beside it, then the old directory is
    /// renamed aside, the new one renamed in, and the old one deleted. A failure before the swap
    /// leaves an existing checkpoint untouched; a crash during the swap leaves the previous
    /// checkpoint in a sibling named <c>.{name}.old-*</c>, which the next save or load renames back
    /// (see <see cref="RecoverInterruptedSave"/>).
    /// </summary>
    /// <remarks>Other files inside <paramref name="dir"/> do not survive a save: the directory belongs to the checkpoint.</remarks>
    /// <param name="dir">The checkpoint directory.</param>
    /// <param name="layout">The model's layout.</param>
    /// <param name="layers">One array per layer.</param>
    /// <param name="state">Optimizer state, or null for weights only.</param>
    /// <param name="notice">Receives one sentence per leftover of an interrupted save that was recovered or removed.</param>
    /// <exception cref="ArgumentException">Layer or state arrays do not match <paramref name="layout"/>.</exception>
    public static void Save(string dir, ModelLayout layout, IReadOnlyList<float[]> layers, TrainingState? state = null, Action<string>? notice = null)
    {
        ArgumentNullException.ThrowIfNull(dir);
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(layers);
        CheckLengths(layout, layers, 1, nameof(layers));
        if (state is not null)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(state.StateFloatsPerParam, nameof(state));
            if (state.Step < 0) throw new ArgumentException($"Training step must not be negative, got {state.Step}.", nameof(state));
            if (state.StateFloatsPerParam > 0) CheckLengths(layout, state.LayerStates, state.StateFloatsPerParam, nameof(state));
        }

        var target = Path.GetFullPath(dir).TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar);
        var parent = Path.GetDirectoryName(target) ?? throw new ArgumentException($"Cannot use '{dir}' as a checkpoint directory.", nameof(dir));
        var name = Path.GetFileName(target);
        Directory.CreateDirectory(parent);
        if (File.Exists(target)) throw new IOException($"Cannot save a checkpoint to '{target}': it is a file, not a directory.");
        foreach (var line in RecoverInterruptedSave(dir)) notice?.Invoke(line);

        var staging = Path.Combine(parent, $".{name}.new-{Guid.NewGuid():N}");
        Directory.CreateDirectory(staging);
        try
        {
            layout.Config.Save(Path.Combine(staging, ConfigFile));
            SafeTensors.Write(Path.Combine(staging, ModelFile), ModelTensors(layout, layers), new Dictionary<string, string> { [FormatKey] = "pt" });
            if (state is not null) WriteState(Path.Combine(staging, StateFile), layout, state);
        }
        catch
        {
            TryDeleteDirectory(staging);
            throw;
        }

        string? old = null;
        try
        {
            if (Directory.Exists(target))
            {
                old = Path.Combine(parent, $".{name}.old-{Guid.NewGuid():N}");
                Directory.Move(target, old);
            }
            Directory.Move(staging, target);
        }
        catch
        {
            if (old is not null && !Directory.Exists(target))
            {
                try
                {
                    Directory.Move(old, target);
                }
                catch (IOException)
                {
                    // Leave it where it is; Load's error names it.
                }
            }
            TryDeleteDirectory(staging);
            throw;
        }
        if (old is not null) TryDeleteDirectory(old);
    }

    private static void CheckLengths(ModelLayout layout, IReadOnlyList<float[]> arrays, int perParam, string paramName)
    {
        ArgumentNullException.ThrowIfNull(arrays, paramName);
        if (arrays.Count != layout.Layers.Count)
            throw new ArgumentException($"Expected {layout.Layers.Count} layer arrays (embedding, {layout.Blocks.Count} blocks, head), got {arrays.Count}.", paramName);
        for (var i = 0; i < arrays.Count; i++)
        {
            var expected = perParam * layout.Layers[i].Length;
            var array = arrays[i];
            if (array is null || array.Length != expected)
                throw new ArgumentException($"Layer '{layout.Layers[i].Name}' needs {expected} floats, got {array?.Length.ToString(CultureInfo.InvariantCulture) ?? "null"}.", paramName);
        }
    }

    private static IEnumerable<(string, long[], ReadOnlyMemory<float>)> ModelTensors(ModelLayout layout, IReadOnlyList<float[]> layers)
    {
        foreach (var layer in layout.Layers)
        {
            var data = layers[layer.Index];
            foreach (var slot in layer.Tensors)
                yield return (slot.FullName, slot.LongShape, data.AsMemory(checked((int)slot.Offset), checked((int)slot.Length)));
        }
    }

    private static void WriteState(string path, ModelLayout layout, TrainingState state)
    {
        var metadata = new Dictionary<string, string>(state.Metadata ?? new Dictionary<string, string>(), StringComparer.Ordinal)
        {
            [StepKey] = state.Step.ToString(CultureInfo.InvariantCulture),
            [OptimizerKey] = state.Optimizer ?? "",
            [StateFloatsKey] = state.StateFloatsPerParam.ToString(CultureInfo.InvariantCulture),
        };
        IEnumerable<(string, long[], ReadOnlyMemory<float>)> tensors = state.StateFloatsPerParam == 0
            ? []
            : layout.Layers.Select(l => ($"state.{l.Name}", new[] { (long)state.LayerStates[l.Index].Length }, (ReadOnlyMemory<float>)state.LayerStates[l.Index]));
        SafeTensors.Write(path, tensors, metadata);
    }

    /// <summary>
    /// Loads <see cref="ConfigFile"/> and <see cref="ModelFile"/> from <paramref name="dir"/>. Accepts
    /// real Hugging Face GPT-2 files: names may carry a <c>transformer.</c> prefix; <c>lm_head.weight</c>
    /// (tied to <c>wte.weight</c>) and the attention mask buffers (<c>h.{i}.attn.bias</c>,
    /// <c>h.{i}.attn.masked_bias</c>) are ignored; F16, BF16 and F64 tensors are converted to float.
    /// </summary>
    /// <param name="dir">Checkpoint directory.</param>
    /// <param name="expected">When given, the checkpoint's config must equal it.</param>
    /// <param name="notice">Receives one sentence per leftover of an interrupted save that was recovered or removed.</param>
    /// <returns>The config and one array per layer of <c>new ModelLayout(Config).Layers</c>.</returns>
    /// <exception cref="DirectoryNotFoundException">No such directory.</exception>
    /// <exception cref="InvalidDataException">
    /// Config differs from <paramref name="expected"/> (the keys are named; a unit-scaled GPT-2 asked for as a standard one, or
    /// the reverse, has a message of its own), or tensors are missing,
    /// have the wrong shape or dtype, or are unknown (all problems are listed, with the file).
    /// </exception>
    public static (IModelConfig Config, float[][] Layers) Load(string dir, IModelConfig? expected = null, Action<string>? notice = null)
    {
        ArgumentNullException.ThrowIfNull(dir);
        foreach (var line in RecoverInterruptedSave(dir)) notice?.Invoke(line);
        RequireDirectory(dir);
        var configPath = Path.Combine(dir, ConfigFile);
        var config = ModelConfigs.Load(configPath);
        if (expected is not null && expected.ModelType != config.ModelType)
            throw new InvalidDataException($"Checkpoint '{dir}' holds a {config.ModelType} model (\"model_type\" in '{configPath}'), but a {expected.ModelType} model was asked for. " +
                $"Drop --model/--config to use the checkpoint's own model, or give a {expected.ModelType} checkpoint.");
        if (expected is GptConfig { UnitScaling: var wanted } && config is GptConfig { UnitScaling: var stored } && wanted != stored)
            throw new InvalidDataException($"Checkpoint '{dir}' holds a {Kind(stored)} GPT-2 (\"{GptConfig.UnitScalingKey}\": {(stored ? "true" : "false")} in '{configPath}'), " +
                $"but a {Kind(wanted)} model was asked for; its weights only work with the ops they were trained with. Use the checkpoint's own config, or a {Kind(wanted)} checkpoint.");
        if (expected is not null)
        {
            var differences = expected.Differences(config);
            if (differences.Count > 0)
                throw new InvalidDataException($"Checkpoint '{dir}' does not match the expected model (expected vs checkpoint): {string.Join("; ", differences)}. " +
                    $"Use the checkpoint's config ('{configPath}') or start from a matching checkpoint.");
        }

        var layout = new ModelLayout(config);
        using var file = SafeTensorsFile.Open(Path.Combine(dir, ModelFile));
        var found = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
        var problems = new List<string>();
        foreach (var info in file.Tensors.Values.OrderBy(t => t.Begin))
        {
            var name = CanonicalName(config, info.Name);
            if (OtherModelType(config, name) is { } other)
                throw new InvalidDataException($"Checkpoint model file '{file.Path}' holds {other} tensors (such as '{info.Name}'), but '{configPath}' says \"model_type\": \"{config.ModelType}\". " +
                    $"Give the checkpoint its own config.json, or a {config.ModelType} checkpoint.");
            if (!layout.TryFind(name, out _, out var slot))
            {
                if (IsIgnorable(name, info, config)) continue;
                problems.Add($"unexpected tensor '{info.Name}' with shape [{string.Join(", ", info.Shape)}]");
                continue;
            }
            if (!found.TryAdd(name, info))
            {
                problems.Add($"tensor '{name}' appears twice (as '{found[name].Name}' and '{info.Name}')");
                continue;
            }
            if (!info.Shape.SequenceEqual(slot.LongShape))
                problems.Add($"'{info.Name}' has shape [{string.Join(", ", info.Shape)}], expected [{string.Join(", ", slot.Shape)}]");
            if (!SafeTensorsFile.IsFloatType(info.DType))
                problems.Add($"'{info.Name}' has dtype {info.DType}, expected a float type (F32, F16, BF16, F64)");
        }
        var missing = layout.Layers.SelectMany(l => l.Tensors).Where(t => !found.ContainsKey(t.FullName)).Select(t => t.FullName).ToList();
        if (missing.Count > 0)
            problems.Insert(0, $"missing {missing.Count} tensor(s): {string.Join(", ", missing.Take(20))}{(missing.Count > 20 ? ", …" : "")}");
        if (problems.Count > 0)
            throw new InvalidDataException($"Checkpoint model file '{file.Path}' does not match its {config.ModelType} config (layers {config.Layers}, width {config.Channels}, vocab_size {config.VocabSize}, positions {config.MaxPositions}):\n  - {string.Join("\n  - ", problems)}");

        var layers = new float[layout.Layers.Count][];
        foreach (var layer in layout.Layers)
        {
            var data = layers[layer.Index] = new float[layer.Length];
            foreach (var slot in layer.Tensors)
                file.ReadFloat32(found[slot.FullName].Name, LayerLayout.Slice(data, slot));
        }
        return (config, layers);
    }

    private static string Kind(bool unitScaled) => unitScaled ? "unit-scaled" : "standard";

    /// <summary>The layout's name for a stored tensor: GPT-2 without <c>transformer.</c>; BERT with <c>bert.</c> on the encoder's tensors.</summary>
    private static string CanonicalName(IModelConfig config, string stored) => config switch
    {
        Bert.BertConfig when !stored.StartsWith("bert.", StringComparison.Ordinal) && !stored.StartsWith("cls.", StringComparison.Ordinal) => "bert." + stored,
        GptConfig when stored.StartsWith("transformer.", StringComparison.Ordinal) => stored["transformer.".Length..],
        _ => stored,
    };

    /// <summary>The other model type whose tell-tale tensor <paramref name="name"/> is, or null.</summary>
    private static string? OtherModelType(IModelConfig config, string name) => config switch
    {
        GptConfig when name.EndsWith("embeddings.word_embeddings.weight", StringComparison.Ordinal) => "BERT",
        Bert.BertConfig when name is "bert.wte.weight" or "bert.transformer.wte.weight" => "GPT-2",
        _ => null,
    };

    private static bool IsIgnorable(string name, SafeTensorInfo info, IModelConfig model)
    {
        if (model is Bert.BertConfig)
        {
            // Tied to the word embedding (HF saves it, or its bias alias, or neither); pre-training and buffer extras.
            return name is "cls.predictions.decoder.weight" or "cls.predictions.decoder.bias" or "bert.embeddings.position_ids"
                || name.StartsWith("bert.pooler.", StringComparison.Ordinal) || name.StartsWith("cls.seq_relationship.", StringComparison.Ordinal);
        }
        var config = (GptConfig)model;
        if (name == "lm_head.weight") return true;
        // HF stores the causal mask as a buffer named like a bias; a real bias would have shape (3C).
        var mask = AttentionBufferName().Match(name);
        return mask.Success && int.Parse(mask.Groups[1].ValueSpan, CultureInfo.InvariantCulture) < config.Layers
            && !(info.Shape.Length == 1 && info.Shape[0] == 3L * config.Channels);
    }

    [GeneratedRegex(@"^h\.(\d+)\.attn\.(?:bias|masked_bias)$", RegexOptions.CultureInvariant)]
    private static partial Regex AttentionBufferName();

    /// <summary>Whether <paramref name="dir"/> holds a <see cref="StateFile"/>.</summary>
    public static bool HasTrainingState(string dir) => File.Exists(Path.Combine(dir, StateFile));

    /// <summary>Loads <see cref="StateFile"/> from <paramref name="dir"/>, checking every layer's length against <paramref name="layout"/>.</summary>
    /// <exception cref="InvalidDataException">Missing or invalid step/optimizer/state_floats metadata, missing, extra or wrongly sized state tensors.</exception>
    public static TrainingState LoadTrainingState(string dir, ModelLayout layout)
    {
        ArgumentNullException.ThrowIfNull(dir);
        ArgumentNullException.ThrowIfNull(layout);
        RequireDirectory(dir);
        using var file = SafeTensorsFile.Open(Path.Combine(dir, StateFile));
        string Meta(string key) => file.Metadata.TryGetValue(key, out var value)
            ? value
            : throw new InvalidDataException($"Training state '{file.Path}' has no \"{key}\" metadata.");
        if (!long.TryParse(Meta(StepKey), NumberStyles.Integer, CultureInfo.InvariantCulture, out var step) || step < 0)
            throw new InvalidDataException($"Training state '{file.Path}': \"{StepKey}\" must be a non-negative integer, found '{Meta(StepKey)}'.");
        if (!int.TryParse(Meta(StateFloatsKey), NumberStyles.Integer, CultureInfo.InvariantCulture, out var perParam) || perParam < 0)
            throw new InvalidDataException($"Training state '{file.Path}': \"{StateFloatsKey}\" must be a non-negative integer, found '{Meta(StateFloatsKey)}'.");
        var optimizer = Meta(OptimizerKey);

        var problems = new List<string>();
        var expectedNames = perParam == 0 ? [] : layout.Layers.Select(l => $"state.{l.Name}").ToHashSet(StringComparer.Ordinal);
        foreach (var name in file.Tensors.Keys.Where(n => !expectedNames.Contains(n)).Order(StringComparer.Ordinal))
            problems.Add($"unexpected tensor '{name}'");
        var states = new float[layout.Layers.Count][];
        foreach (var layer in layout.Layers)
        {
            if (perParam == 0)
            {
                states[layer.Index] = [];
                continue;
            }
            var name = $"state.{layer.Name}";
            var expectedLength = perParam * layer.Length;
            if (!file.Tensors.TryGetValue(name, out var info))
                problems.Add($"missing tensor '{name}'");
            else if (info.ElementCount != expectedLength)
                problems.Add($"'{name}' has {info.ElementCount} floats, expected {expectedLength} ({perParam} per parameter × {layer.Length})");
            else if (!SafeTensorsFile.IsFloatType(info.DType))
                problems.Add($"'{name}' has dtype {info.DType}, expected a float type");
        }
        if (problems.Count > 0)
            throw new InvalidDataException($"Training state '{file.Path}' does not match the model (layers {layout.Config.Layers}, width {layout.Config.Channels}):\n  - {string.Join("\n  - ", problems)}");

        if (perParam > 0)
        {
            foreach (var layer in layout.Layers)
            {
                var data = states[layer.Index] = new float[perParam * layer.Length];
                file.ReadFloat32($"state.{layer.Name}", data);
            }
        }
        var metadata = file.Metadata.Where(p => p.Key is not (StepKey or OptimizerKey or StateFloatsKey))
            .ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal);
        return new TrainingState(step, optimizer, perParam, states, metadata);
    }

    /// <summary>
    /// Tidies what an interrupted <see cref="Save"/> left beside <paramref name="dir"/>. When the
    /// checkpoint is missing but the previous one was renamed aside (<c>.{name}.old-*</c>), the most
    /// recent such copy is renamed back; staging directories (<c>.{name}.new-*</c>, whose swap never
    /// happened) and old copies of a checkpoint that is in place are deleted.
    /// </summary>
    /// <returns>One sentence per directory recovered or removed (empty when there was nothing to do).</returns>
    public static IReadOnlyList<string> RecoverInterruptedSave(string dir)
    {
        ArgumentNullException.ThrowIfNull(dir);
        var target = Path.GetFullPath(dir).TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar);
        var parent = Path.GetDirectoryName(target);
        var done = new List<string>();
        if (parent is null || !Directory.Exists(parent)) return done;
        var name = Path.GetFileName(target);
        string[] Siblings(string kind) => Directory.GetDirectories(parent, $".{name}.{kind}-*");
        var olds = Siblings("old").OrderByDescending(Directory.GetLastWriteTimeUtc).ToList();
        if (!Directory.Exists(target) && !File.Exists(target) && olds.Count > 0)
        {
            try
            {
                Directory.Move(olds[0], target);
                done.Add($"recovered checkpoint '{target}' from '{olds[0]}', left by a save that was interrupted while swapping directories");
                olds.RemoveAt(0);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return done; // Load's error names the copy, so the user can rename it by hand.
            }
        }
        if (!Directory.Exists(target)) olds.Clear(); // never delete the only copy of a checkpoint
        foreach (var leftover in Siblings("new").Concat(olds))
        {
            TryDeleteDirectory(leftover);
            if (!Directory.Exists(leftover))
                done.Add($"removed '{leftover}', left by an interrupted checkpoint save");
        }
        return done;
    }

    private static void RequireDirectory(string dir)
    {
        if (Directory.Exists(dir)) return;
        var full = Path.GetFullPath(dir).TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar);
        var parent = Path.GetDirectoryName(full);
        var leftovers = parent is not null && Directory.Exists(parent)
            ? Directory.GetDirectories(parent, $".{Path.GetFileName(full)}.old-*")
            : [];
        var hint = leftovers.Length > 0
            ? $" A save was interrupted while swapping directories; the previous checkpoint is in '{leftovers[0]}' (rename it to '{full}' to use it)."
            : "";
        throw new DirectoryNotFoundException($"Checkpoint directory '{dir}' not found.{hint}");
    }

    private static void TryDeleteDirectory(string path)
    {
        try
        {
            if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
