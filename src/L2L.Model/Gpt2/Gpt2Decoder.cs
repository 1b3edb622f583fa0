// GPT-2 forward-only decoding on the device with a per-layer key/value cache; blocks resident or streamed layer by layer.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.Model.Device;

namespace L2L.Model.Gpt2;

/// <summary>Where a decoder keeps the transformer blocks' weights.</summary>
public enum WeightPlacement
{
    /// <summary>Resident when every block fits the device (its budget, else its memory) beside the cache and workspace; else streamed.</summary>
    Auto,

    /// <summary>Every block on the device once.</summary>
    Resident,

    /// <summary>Blocks stream from pinned host memory through two device slots, the next one copied while the current one runs (as the relay does).</summary>
    Streamed,
}

/// <summary>
/// Runs GPT-2 forward for generation. <see cref="Prefill"/> runs a whole prefix at once (causal attention over it) and
/// fills each layer's key/value cache; <see cref="Step"/> then adds one token at a time, costing one position per layer
/// (the query attends over the cache). Both return the logits of the last position. The embedding and final LayerNorm
/// stay on the device; the blocks are resident or streamed (<see cref="WeightPlacement"/>). Every buffer is allocated
/// once, in the constructor, through the memory tracker.
/// </summary>
public sealed class Gpt2Decoder : IDisposable
{
    private readonly Backend _backend;
    private readonly ModelLayout _layout;
    private readonly GemmOps _gemm;
    private readonly LayerNormOps _ln;
    private readonly GeluOps _gelu;
    private readonly AttentionOps _attention;
    private readonly KvCacheAttentionOps _kv;
    private readonly ResidualOps _residual;
    private readonly EmbeddingOps _embeddingOps;
    private readonly ResourceList _owned = new();
    private readonly DeviceBuffer<float> _embedding, _head, _blocks, _kCache, _vCache;
    private readonly DeviceBuffer<float> _x, _y, _lnOut, _qkv, _attY, _x1, _fc, _act, _mean, _rstd, _probs, _scores, _logits;
    private readonly DeviceBuffer<int> _tokens;
    private readonly PinnedHostBuffer<float>? _hostBlocks;
    private readonly long _blockLength;
    private readonly float[] _hostLogits;

    /// <summary>
    /// Prepares decoding of up to <paramref name="maxTokens"/> positions (prompt and generated tokens together; at most
    /// the model's <c>n_positions</c>) with the weights <paramref name="weights"/> (one array per layer of <paramref name="layout"/>).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="maxTokens"/> is out of range, or the weights do not match the layout.</exception>
    /// <exception cref="DeviceOutOfMemoryException">The device cannot hold the decoder even with streamed blocks.</exception>
    public Gpt2Decoder(Backend backend, ModelLayout layout, IReadOnlyList<float[]> weights, int maxTokens, WeightPlacement placement = WeightPlacement.Auto)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(weights);
        var cfg = layout.Config as GptConfig
            ?? throw new NotSupportedException($"Generation runs GPT-2 models; this checkpoint is a '{layout.Config.ModelType}' model.");
        if (cfg.UnitScaling)
            throw new NotSupportedException("Generation from a unit-scaled model (\"unit_scaling\": true) is not implemented: the cached decoder runs the standard GPT-2's ops. Evaluate it with 'l2l eval' instead.");
        if (maxTokens < 1 || maxTokens > cfg.MaxPositions)
            throw new ArgumentException($"A decoder holds between 1 and n_positions = {cfg.MaxPositions} tokens, not {maxTokens}.", nameof(maxTokens));
        if (weights.Count != layout.Layers.Count)
            throw new ArgumentException($"Expected {layout.Layers.Count} layer arrays, got {weights.Count}.", nameof(weights));
        for (var i = 0; i < weights.Count; i++)
            if (weights[i].Length != layout.Layers[i].Length)
                throw new ArgumentException($"Layer '{layout.Layers[i].Name}' has {weights[i].Length} floats, expected {layout.Layers[i].Length}.", nameof(weights));

        _backend = backend;
        _layout = layout;
        MaxTokens = maxTokens;
        _gemm = backend.Get<GemmOps>();
        _ln = backend.Get<LayerNormOps>();
        _gelu = backend.Get<GeluOps>();
        _attention = backend.Get<AttentionOps>();
        _kv = backend.Get<KvCacheAttentionOps>();
        _residual = backend.Get<ResidualOps>();
        _embeddingOps = backend.Get<EmbeddingOps>();
        _blockLength = layout.Blocks.Count > 0 ? layout.Blocks[0].Length : 0;
        _hostLogits = new float[cfg.VocabSize];
        int c = cfg.Channels, n = maxTokens, layers = cfg.Layers;
        Streamed = placement switch
        {
            WeightPlacement.Resident => false,
            WeightPlacement.Streamed => true,
            _ => !Fits(backend, FixedBytes(layout, maxTokens) + 4 * _blockLength * layers),
        };
        try
        {
            var s = backend.ComputeStream;
            _embedding = Track(backend.Allocate<float>(layout.Embedding.Length, MemoryCategory.Params, "decoder-embedding"));
            _head = Track(backend.Allocate<float>(layout.Head.Length, MemoryCategory.Params, "decoder-head"));
            _blocks = Track(backend.Allocate<float>(Math.Max(1, _blockLength * (Streamed ? Math.Min(2, layers) : layers)), MemoryCategory.Params, Streamed ? "decoder-block-slots" : "decoder-blocks"));
            _kCache = Track(backend.Allocate<float>(Math.Max(1, (long)layers * n * c), MemoryCategory.Workspace, "kv-cache-keys"));
            _vCache = Track(backend.Allocate<float>(Math.Max(1, (long)layers * n * c), MemoryCategory.Workspace, "kv-cache-values"));
            _x = Track(backend.Allocate<float>((long)n * c, MemoryCategory.Workspace, "decoder-x"));
            _y = Track(backend.Allocate<float>((long)n * c, MemoryCategory.Workspace, "decoder-y"));
            _lnOut = Track(backend.Allocate<float>((long)n * c, MemoryCategory.Workspace, "decoder-ln"));
            _qkv = Track(backend.Allocate<float>(3L * n * c, MemoryCategory.Workspace, "decoder-qkv"));
            _attY = Track(backend.Allocate<float>((long)n * c, MemoryCategory.Workspace, "decoder-atty"));
            _x1 = Track(backend.Allocate<float>((long)n * c, MemoryCategory.Workspace, "decoder-x1"));
            _fc = Track(backend.Allocate<float>(4L * n * c, MemoryCategory.Workspace, "decoder-fc"));
            _act = Track(backend.Allocate<float>(4L * n * c, MemoryCategory.Workspace, "decoder-gelu"));
            _mean = Track(backend.Allocate<float>(n, MemoryCategory.Workspace, "decoder-mean"));
            _rstd = Track(backend.Allocate<float>(n, MemoryCategory.Workspace, "decoder-rstd"));
            _probs = Track(backend.Allocate<float>(AttentionOps.LseLength(1, n, cfg.Heads), MemoryCategory.Workspace, "decoder-lse"));
            _scores = Track(backend.Allocate<float>(KvCacheAttentionOps.ScoresLength(cfg.Heads, n), MemoryCategory.Workspace, "decoder-scores"));
            _logits = Track(backend.Allocate<float>(cfg.VocabSize, MemoryCategory.Workspace, "decoder-logits"));
            _tokens = Track(backend.Allocate<int>(n, MemoryCategory.Workspace, "decoder-tokens"));

            _embedding.View.CopyFromCPU(s, weights[layout.Embedding.Index]);
            _head.View.CopyFromCPU(s, weights[layout.Head.Index]);
            if (Streamed)
            {
                _hostBlocks = Track(backend.AllocatePinned<float>(_blockLength * layers));
                for (var l = 0; l < layers; l++)
                    weights[layout.Blocks[l].Index].AsSpan().CopyTo(_hostBlocks.Slice((long)l * _blockLength, (int)_blockLength));
            }
            else
            {
                for (var l = 0; l < layers; l++)
                    _blocks.View.SubView(l * _blockLength, _blockLength).CopyFromCPU(s, weights[layout.Blocks[l].Index]);
            }
            s.Synchronize();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The most positions the cache holds.</summary>
    public int MaxTokens { get; }

    /// <summary>Positions now in the cache (the next token's position).</summary>
    public int Position { get; private set; }

    /// <summary>True when blocks stream through two device slots, false when they are resident.</summary>
    public bool Streamed { get; }

    private float Epsilon => ((GptConfig)_layout.Config).LayerNormEpsilon;

    /// <summary>Host-to-device bytes moved so far for streamed blocks (0 when resident).</summary>
    public long BusBytes { get; private set; }

    /// <summary>Device bytes the decoder holds besides the blocks' weights: embedding, head, cache and workspace for <paramref name="maxTokens"/> positions.</summary>
    public static long FixedBytes(ModelLayout layout, int maxTokens)
    {
        var cfg = layout.Config;
        long c = cfg.Channels, n = maxTokens;
        var floats = layout.Embedding.Length + layout.Head.Length + 2L * cfg.Layers * n * c
            + n * c * 5 + 3 * n * c + 8 * n * c + 2 * n + cfg.Heads * n * n + cfg.Heads * n + cfg.VocabSize;
        return 4 * floats + 4 * n;
    }

    private static bool Fits(Backend backend, long bytes)
    {
        var capacity = backend.Memory.BudgetBytes ?? backend.Accelerator.MemorySize;
        return backend.Memory.CurrentBytes + bytes <= capacity * 0.9;
    }

    private T Track<T>(T resource) where T : IDisposable => _owned.Add(resource);

    /// <summary>Empties the cache and runs <paramref name="tokens"/> (positions 0 ..) at once; returns the last position's logits (V).</summary>
    public float[] Prefill(ReadOnlySpan<int> tokens)
    {
        if (tokens.Length < 1 || tokens.Length > MaxTokens)
            throw new ArgumentException($"A prefix holds between 1 and {MaxTokens} tokens, not {tokens.Length}.", nameof(tokens));
        Position = 0;
        return Run(tokens);
    }

    /// <summary>Adds <paramref name="token"/> at <see cref="Position"/> (one position per layer); returns its logits (V).</summary>
    /// <exception cref="InvalidOperationException">The cache is full (<see cref="MaxTokens"/>) or nothing was prefilled.</exception>
    public float[] Step(int token)
    {
        if (Position == 0) throw new InvalidOperationException("Prefill a prompt before stepping.");
        if (Position >= MaxTokens)
            throw new InvalidOperationException($"The key/value cache is full: {MaxTokens} positions.");
        return Run([token]);
    }

    private float[] Run(ReadOnlySpan<int> tokens)
    {
        var cfg = _layout.Config;
        int n = tokens.Length, c = cfg.Channels, pos = Position;
        foreach (var id in tokens)
            if (id < 0 || id >= cfg.VocabSize)
                throw new ArgumentOutOfRangeException(nameof(tokens), id, $"Token ids lie in 0..{cfg.VocabSize - 1} (the model's vocab_size).");
        var s = _backend.ComputeStream;
        _tokens.View.SubView(0, n).CopyFromCPU(s, tokens.ToArray());
        var e = new LayerViews<float>(_layout.Embedding, _embedding.View);
        var wpe = e["wpe.weight"];
        var x = _x.View.SubView(0, (long)n * c);
        var y = _y.View.SubView(0, (long)n * c);
        _embeddingOps.Forward(s, x, _tokens.View.SubView(0, n), e["wte.weight"], wpe.SubView((long)pos * c, (long)(cfg.MaxPositions - pos) * c), 1, n, c);

        var layers = cfg.Layers;
        var copy = _backend.CopyStream;
        if (Streamed && layers > 0) Fetch(0);
        for (var l = 0; l < layers; l++)
        {
            ArrayView<float> parameters;
            if (Streamed)
            {
                copy.Synchronize(); // block l is in slot l % 2
                if (l + 1 < layers)
                {
                    s.Synchronize(); // block l-1, which used the other slot, is done with it
                    Fetch(l + 1);
                }
                parameters = Slot(l);
            }
            else
            {
                parameters = _blocks.View.SubView(l * _blockLength, _blockLength);
            }
            Block(s, l, new LayerViews<float>(_layout.Blocks[l], parameters), n, pos, x, y);
            (x, y) = (y, x);
        }

        var h = new LayerViews<float>(_layout.Head, _head.View);
        var lastRow = x.SubView((long)(n - 1) * c, c);
        var lnf = _lnOut.View.SubView(0, c);
        _ln.Forward(s, lnf, _mean.View.SubView(0, 1), _rstd.View.SubView(0, 1), lastRow, h["ln_f.weight"], h["ln_f.bias"], 1, c, Epsilon);
        _gemm.Gemm(s, _logits.View, lnf, e["wte.weight"], 1, cfg.VocabSize, c, GemmLayout.NT);
        _logits.View.CopyToCPU(s, _hostLogits);
        s.Synchronize();
        Position = pos + n;
        return (float[])_hostLogits.Clone();
    }

    private ArrayView<float> Slot(int layer) => _blocks.View.SubView(layer % 2 * _blockLength, _blockLength);

    private void Fetch(int layer)
    {
        _hostBlocks!.CopyToDeviceAsync(_backend.CopyStream, Slot(layer), layer * _blockLength, _blockLength);
        BusBytes += 4 * _blockLength;
    }

    // One pre-LN block over n rows at positions pos .. pos+n-1: keys and values go to layer l's cache; a single row
    // attends over the cache, several rows (a prefix from position 0) attend causally among themselves.
    private void Block(AcceleratorStream s, int l, LayerViews<float> p, int n, int pos, ArrayView<float> input, ArrayView<float> output)
    {
        var cfg = _layout.Config;
        int c = cfg.Channels, nh = cfg.Heads, maxT = MaxTokens;
        long rows = n;
        var ln = _lnOut.View.SubView(0, rows * c);
        var mean = _mean.View.SubView(0, rows);
        var rstd = _rstd.View.SubView(0, rows);
        var qkv = _qkv.View.SubView(0, 3 * rows * c);
        var attY = _attY.View.SubView(0, rows * c);
        var x1 = _x1.View.SubView(0, rows * c);
        var fc = _fc.View.SubView(0, 4 * rows * c);
        var act = _act.View.SubView(0, 4 * rows * c);
        var kCache = _kCache.View.SubView((long)l * maxT * c, (long)maxT * c);
        var vCache = _vCache.View.SubView((long)l * maxT * c, (long)maxT * c);

        _ln.Forward(s, ln, mean, rstd, input, p["ln_1.weight"], p["ln_1.bias"], n, c, Epsilon);
        _gemm.Gemm(s, qkv, ln, p["attn.c_attn.weight"], n, 3 * c, c, GemmLayout.NN, bias: p["attn.c_attn.bias"]);
        _kv.Append(s, kCache, vCache, qkv, pos, n, c, maxT);
        if (n == 1)
            _kv.Attend(s, attY, _scores.View, qkv, kCache, vCache, pos + 1, c, nh, maxT);
        else
            _attention.Forward(s, attY, _probs.View.SubView(0, AttentionOps.LseLength(1, n, nh)), qkv, default, 1, n, c, nh, causal: true);
        _gemm.Gemm(s, x1, attY, p["attn.c_proj.weight"], n, c, c, GemmLayout.NN, bias: p["attn.c_proj.bias"]);
        _residual.Add(s, x1, x1, input);
        _ln.Forward(s, ln, mean, rstd, x1, p["ln_2.weight"], p["ln_2.bias"], n, c, Epsilon);
        _gemm.Gemm(s, fc, ln, p["mlp.c_fc.weight"], n, 4 * c, c, GemmLayout.NN, bias: p["mlp.c_fc.bias"]);
        _gelu.Forward(s, act, fc);
        _gemm.Gemm(s, output, act, p["mlp.c_proj.weight"], n, c, 4 * c, GemmLayout.NN, bias: p["mlp.c_proj.bias"]);
        _residual.Add(s, output, output, x1);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        try { _backend.Synchronize(); } catch (Exception) { /* release what we own regardless */ }
        _owned.Dispose();
    }
}
