// The parameter name table: where every GPT-2 tensor lives inside its layer's one contiguous float block.
using System.Diagnostics.CodeAnalysis;

namespace L2L.Model;

/// <summary>What a layer computes.</summary>
public enum LayerKind
{
    /// <summary>Token plus position embedding (<c>wte</c>, <c>wpe</c>); <c>wte</c> is also the tied LM head.</summary>
    Embedding,

    /// <summary>A transformer block <c>h.{i}</c>: pre-LN attention and MLP, each on a residual line.</summary>
    Block,

    /// <summary>The final LayerNorm (<c>ln_f</c>) before the tied LM head and the loss.</summary>
    Head,
}

/// <summary>One tensor inside a layer's contiguous block.</summary>
/// <param name="LocalName">Name within the layer, e.g. <c>attn.c_attn.weight</c>.</param>
/// <param name="FullName">Hugging Face GPT-2 name, e.g. <c>h.3.attn.c_attn.weight</c>.</param>
/// <param name="Offset">First float of the tensor within the layer block.</param>
/// <param name="Shape">Row-major shape; linear weights are [in, out] as in Hugging Face's Conv1D.</param>
/// <param name="Decay">Whether weight decay applies (the 2-D matrices and embeddings, not biases or LayerNorm gains).</param>
public sealed record TensorSlot(string LocalName, string FullName, long Offset, int[] Shape, bool Decay)
{
    /// <summary>Number of floats, the product of <see cref="Shape"/>.</summary>
    public long Length => Shape.Aggregate(1L, (n, d) => n * d);

    /// <summary>The shape as <c>long</c>s, as safetensors stores it.</summary>
    public long[] LongShape => Array.ConvertAll(Shape, d => (long)d);
}

/// <summary>
/// One layer's parameters: a single contiguous float block (so one copy moves the layer) holding
/// its tensors back to back at fixed offsets, in a fixed order.
/// </summary>
public sealed class LayerLayout
{
    private readonly Dictionary<string, TensorSlot> _byName;

    internal LayerLayout(int index, string name, LayerKind kind, IEnumerable<(string LocalName, int[] Shape, bool Decay)> tensors)
    {
        Index = index;
        Name = name;
        Kind = kind;
        var prefix = kind == LayerKind.Block ? name + "." : "";
        var slots = new List<TensorSlot>();
        long offset = 0;
        foreach (var (localName, shape, decay) in tensors)
        {
            var slot = new TensorSlot(localName, prefix + localName, offset, shape, decay);
            slots.Add(slot);
            offset += slot.Length;
        }
        Tensors = slots.AsReadOnly();
        Length = offset;
        _byName = slots.ToDictionary(s => s.LocalName, StringComparer.Ordinal);
    }

    /// <summary>Position in <see cref="ModelLayout.Layers"/>.</summary>
    public int Index { get; }

    /// <summary><c>embedding</c>, <c>h.0</c> … <c>h.{L-1}</c>, or <c>head</c>.</summary>
    public string Name { get; }

    /// <summary>What the layer computes.</summary>
    public LayerKind Kind { get; }

    /// <summary>The tensors in storage order; offsets are contiguous and start at 0.</summary>
    public IReadOnlyList<TensorSlot> Tensors { get; }

    /// <summary>Total floats in the layer block.</summary>
    public long Length { get; }

    /// <summary>The tensor with local name <paramref name="localName"/>, e.g. <c>attn.c_attn.weight</c>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor; the message lists this layer's tensors.</exception>
    public TensorSlot this[string localName] =>
        _byName.TryGetValue(localName, out var slot)
            ? slot
            : throw new KeyNotFoundException($"Layer '{Name}' has no tensor '{localName}'. Its tensors: {string.Join(", ", Tensors.Select(t => t.LocalName))}.");

    /// <summary>The floats of <paramref name="slot"/> within this layer's block <paramref name="data"/>.</summary>
    public static Span<float> Slice(Span<float> data, TensorSlot slot) => data.Slice(checked((int)slot.Offset), checked((int)slot.Length));

    /// <inheritdoc/>
    public override string ToString() => $"{Name} ({Kind}, {Length} floats)";
}

/// <summary>
/// The GPT-2 parameter layout: layers <c>[embedding, h.0 … h.{L-1}, head]</c>, each one contiguous
/// block. Tensor names and shapes are Hugging Face GPT-2's, so checkpoints map one to one.
/// </summary>
public sealed class ModelLayout
{
    private readonly Dictionary<string, (LayerLayout Layer, TensorSlot Slot)> _byFullName;

    /// <summary>Builds the layout of <paramref name="config"/>.</summary>
    /// <exception cref="InvalidDataException">The config is invalid.</exception>
    public ModelLayout(GptConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        int c = config.Channels;

        var layers = new List<LayerLayout>
        {
            new(0, "embedding", LayerKind.Embedding,
            [
                ("wte.weight", [config.VocabSize, c], true),
                ("wpe.weight", [config.MaxPositions, c], true),
            ]),
        };
        for (var i = 0; i < config.Layers; i++)
        {
            layers.Add(new LayerLayout(i + 1, $"h.{i}", LayerKind.Block,
            [
                ("ln_1.weight", [c], false),
                ("ln_1.bias", [c], false),
                ("attn.c_attn.weight", [c, 3 * c], true),
                ("attn.c_attn.bias", [3 * c], false),
                ("attn.c_proj.weight", [c, c], true),
                ("attn.c_proj.bias", [c], false),
                ("ln_2.weight", [c], false),
                ("ln_2.bias", [c], false),
                ("mlp.c_fc.weight", [c, 4 * c], true),
                ("mlp.c_fc.bias", [4 * c], false),
                ("mlp.c_proj.weight", [4 * c, c], true),
                ("mlp.c_proj.bias", [c], false),
            ]));
        }
        layers.Add(new LayerLayout(config.Layers + 1, "head", LayerKind.Head,
        [
            ("ln_f.weight", [c], false),
            ("ln_f.bias", [c], false),
        ]));

        Layers = layers.AsReadOnly();
        Embedding = layers[0];
        Blocks = layers.GetRange(1, config.Layers).AsReadOnly();
        Head = layers[^1];
        TotalLength = layers.Sum(l => l.Length);
        _byFullName = layers.SelectMany(l => l.Tensors.Select(t => (Layer: l, Slot: t)))
            .ToDictionary(x => x.Slot.FullName, StringComparer.Ordinal);
    }

    /// <summary>The model dimensions.</summary>
    public GptConfig Config { get; }

    /// <summary>All layers in execution order: embedding, the blocks, head.</summary>
    public IReadOnlyList<LayerLayout> Layers { get; }

    /// <summary>Token and position embeddings: <c>wte.weight</c> (V, C) and <c>wpe.weight</c> (n_positions, C).</summary>
    public LayerLayout Embedding { get; }

    /// <summary>The transformer blocks <c>h.0</c> … <c>h.{L-1}</c>.</summary>
    public IReadOnlyList<LayerLayout> Blocks { get; }

    /// <summary>The final LayerNorm <c>ln_f</c>; the LM head is tied to <c>wte.weight</c> in <see cref="Embedding"/>.</summary>
    public LayerLayout Head { get; }

    /// <summary>Total floats over all layers; equals <see cref="GptConfig.ParameterCount"/>.</summary>
    public long TotalLength { get; }

    /// <summary>Looks a tensor up by its Hugging Face name, e.g. <c>h.0.ln_1.weight</c>.</summary>
    public bool TryFind(string fullName, [MaybeNullWhen(false)] out LayerLayout layer, [MaybeNullWhen(false)] out TensorSlot slot)
    {
        if (_byFullName.TryGetValue(fullName, out var found))
        {
            (layer, slot) = found;
            return true;
        }
        layer = null;
        slot = null;
        return false;
    }
}
