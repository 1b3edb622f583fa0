// A step's token ids, token types, targets and padding masks: pinned on the host for all micro-batches, on the device for one.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;

namespace L2L.Model.Device;

/// <summary>
/// The inputs of every micro-batch of a step. <see cref="Load"/> copies the step's (U·B·T) ids,
/// token types and targets into pinned host memory and derives, on the host, what the model needs
/// besides: the scatter plans of the embedding gradient and, for a model with a padding id, the
/// per-key padding mask. The device holds one micro-batch's worth, refilled by the Upload methods
/// on the compute stream, so it never depends on the number of micro-batches.
/// </summary>
public sealed class MicroBatchInputs : IDisposable
{
    /// <summary>A target with this value is not scored (no loss, no gradient).</summary>
    public const int IgnoreIndex = -1;

    private readonly ResourceList _owned = new();
    private readonly int _tokens, _microBatches, _vocab;
    private readonly int? _padId;
    private readonly PinnedHostBuffer<int> _hostIds, _hostTargets;
    private readonly PinnedHostBuffer<int>? _hostTypes, _hostMask;
    private readonly ScatterPlans _plans;
    private readonly ScatterPlans? _typePlans;

    /// <summary>
    /// The device buffers (int32, one micro-batch's worth, in allocation order) and the pinned host buffers (all U
    /// micro-batches) that room for <paramref name="microBatches"/> micro-batches of <paramref name="shape"/> takes.
    /// </summary>
    public static (IReadOnlyList<BufferSpec> Device, IReadOnlyList<BufferSpec> Host) Describe(MicroBatch shape, int microBatches, ModelInputs needs)
    {
        long tokens = shape.Tokens, all = (long)microBatches * shape.Tokens, plan = EmbeddingScatterPlan.Length(shape.Tokens);
        BufferSpec D(string what, long len) => new(what, MemoryCategory.Workspace, len);
        BufferSpec H(string what, long len) => new(what, MemoryCategory.Other, len);
        var device = new List<BufferSpec> { D("tokens.inputs", tokens), D("tokens.targets", tokens), D("tokens.scatter-plan", plan) };
        var host = new List<BufferSpec>();
        if (needs.TokenTypes)
        {
            device.AddRange([D("tokens.types", tokens), D("tokens.type-scatter-plan", plan)]);
            host.AddRange([H("host.tokens.types", all), H("host.tokens.type-scatter-plans", microBatches * plan)]);
        }
        if (needs.PadTokenId is not null)
        {
            device.Add(D("tokens.key-mask", tokens));
            host.Add(H("host.tokens.key-mask", all));
        }
        host.AddRange([H("host.tokens.inputs", all), H("host.tokens.targets", all), H("host.tokens.scatter-plans", microBatches * plan)]);
        return (device, host);
    }

    /// <summary>Room for <paramref name="microBatches"/> micro-batches of <paramref name="shape"/> holding what <paramref name="needs"/> asks for.</summary>
    public MicroBatchInputs(Backend backend, MicroBatch shape, int microBatches, ModelInputs needs)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(microBatches, 1);
        _tokens = shape.Tokens;
        _microBatches = microBatches;
        _vocab = shape.Config.VocabSize;
        _padId = needs.PadTokenId;
        try
        {
            var (device, host) = Describe(shape, microBatches, needs);
            var b = _owned.Add(new BufferSet(backend, device, device.Select(d => d.Name).ToHashSet()));
            PinnedHostBuffer<int> P(string what) => _owned.Add(backend.AllocatePinned<int>(host.Named(what).Length));
            Ids = b.Int("tokens.inputs");
            Targets = b.Int("tokens.targets");
            ScatterPlan = b.Int("tokens.scatter-plan");
            if (needs.TokenTypes)
            {
                TokenTypes = b.Int("tokens.types");
                TypeScatterPlan = b.Int("tokens.type-scatter-plan");
                _hostTypes = P("host.tokens.types");
                _typePlans = _owned.Add(new ScatterPlans(backend, microBatches, _tokens));
            }
            if (needs.PadTokenId is not null)
            {
                KeyMask = b.Int("tokens.key-mask");
                _hostMask = P("host.tokens.key-mask");
            }
            _hostIds = P("host.tokens.inputs");
            _hostTargets = P("host.tokens.targets");
            _plans = _owned.Add(new ScatterPlans(backend, microBatches, _tokens));
        }
        catch
        {
            _owned.Dispose();
            throw;
        }
    }

    /// <summary>Bytes copied to the device by the Upload methods since creation (inputs, targets, masks and scatter plans).</summary>
    public long UploadedBytes => Interlocked.Read(ref _uploaded);

    private long _uploaded;

    /// <summary>Token ids (N) of the uploaded micro-batch.</summary>
    public DeviceBuffer<int> Ids { get; }
    /// <summary>Targets (N), <see cref="IgnoreIndex"/> where unlabelled.</summary>
    public DeviceBuffer<int> Targets { get; }
    /// <summary>The ids grouped by value, for the token-embedding gradient (see <see cref="EmbeddingScatterPlan"/>).</summary>
    public DeviceBuffer<int> ScatterPlan { get; }
    /// <summary>Token types (N), when the model reads them.</summary>
    public DeviceBuffer<int>? TokenTypes { get; }
    /// <summary>The token types grouped by value, for the token-type-embedding gradient.</summary>
    public DeviceBuffer<int>? TypeScatterPlan { get; }
    /// <summary>Per key position (N): 1 where it may be attended, 0 where it holds the padding id; when the model pads.</summary>
    public DeviceBuffer<int>? KeyMask { get; }

    /// <summary>Labelled targets of the loaded step (those not <see cref="IgnoreIndex"/>), the loss normaliser.</summary>
    public long Labelled { get; private set; }

    /// <summary>Distinct ids in the micro-batch whose plans <see cref="UploadPlans"/> enqueued last.</summary>
    public int Segments { get; private set; }

    /// <summary>Distinct token types in the micro-batch whose plans <see cref="UploadPlans"/> enqueued last.</summary>
    public int TypeSegments { get; private set; }

    /// <summary>
    /// Takes a step's ids and targets (U·B·T each) and token types (the same length, or empty for all 0);
    /// returns the number of labelled targets. Ids must lie in [0, V); targets in [0, V) or be <see cref="IgnoreIndex"/>.
    /// </summary>
    /// <exception cref="ArgumentException">A length or value is out of range.</exception>
    public long Load(ReadOnlySpan<int> ids, ReadOnlySpan<int> targets, ReadOnlySpan<int> tokenTypes = default)
    {
        var total = _microBatches * _tokens;
        if (ids.Length != total || targets.Length != total)
            throw new ArgumentException($"Expected {total} input and target tokens ({_microBatches} micro-batches of {_tokens}), got {ids.Length} and {targets.Length}.");
        if (tokenTypes.Length != 0 && tokenTypes.Length != total)
            throw new ArgumentException($"Expected {total} token types or none, got {tokenTypes.Length}.");
        long labelled = 0;
        foreach (var t in targets)
        {
            if (t == IgnoreIndex) continue;
            if ((uint)t >= (uint)_vocab) throw new ArgumentException($"Target id {t} is outside the vocabulary [0, {_vocab}).");
            labelled++;
        }
        ids.CopyTo(_hostIds.Span);
        targets.CopyTo(_hostTargets.Span);
        _plans.Build(ids);
        if (_hostTypes is not null)
        {
            if (tokenTypes.IsEmpty) _hostTypes.Span.Clear();
            else tokenTypes.CopyTo(_hostTypes.Span);
            _typePlans!.Build(_hostTypes.Span);
        }
        if (_hostMask is not null)
        {
            var mask = _hostMask.Span;
            var pad = _padId!.Value;
            for (var i = 0; i < total; i++) mask[i] = ids[i] == pad ? 0 : 1;
        }
        Labelled = labelled;
        return labelled;
    }

    /// <summary>Enqueues the upload of micro-batch <paramref name="u"/>'s ids, token types and key mask on <paramref name="s"/>.</summary>
    public void UploadInputs(AcceleratorStream s, int u)
    {
        var offset = (long)u * _tokens;
        _hostIds.CopyToDeviceAsync(s, Ids.View, offset, _tokens);
        _hostTypes?.CopyToDeviceAsync(s, TokenTypes!.View, offset, _tokens);
        _hostMask?.CopyToDeviceAsync(s, KeyMask!.View, offset, _tokens);
        Interlocked.Add(ref _uploaded, (long)_tokens * sizeof(int) * (1 + (_hostTypes is null ? 0 : 1) + (_hostMask is null ? 0 : 1)));
    }

    /// <summary>Enqueues the upload of micro-batch <paramref name="u"/>'s targets.</summary>
    public void UploadTargets(AcceleratorStream s, int u)
    {
        _hostTargets.CopyToDeviceAsync(s, Targets.View, (long)u * _tokens, _tokens);
        Interlocked.Add(ref _uploaded, (long)_tokens * sizeof(int));
    }

    /// <summary>Enqueues the upload of micro-batch <paramref name="u"/>'s scatter plans (for the embedding backward).</summary>
    public void UploadPlans(AcceleratorStream s, int u)
    {
        _plans.Upload(s, u, ScatterPlan.View);
        Interlocked.Add(ref _uploaded, (long)_plans.PlanLength * sizeof(int));
        Segments = _plans.Segments(u);
        if (_typePlans is null) return;
        _typePlans.Upload(s, u, TypeScatterPlan!.View);
        Interlocked.Add(ref _uploaded, (long)_typePlans.PlanLength * sizeof(int));
        TypeSegments = _typePlans.Segments(u);
    }

    /// <summary>Bytes uploaded per micro-batch by <see cref="UploadInputs"/> and <see cref="UploadTargets"/>.</summary>
    public long BytesPerMicroBatch => (long)_tokens * sizeof(int) * (2 + (_hostTypes is null ? 0 : 1) + (_hostMask is null ? 0 : 1));

    /// <inheritdoc/>
    public void Dispose() => _owned.Dispose();
}
