// Launchers for multi-head scaled-dot-product attention over a fused qkv tensor (B, T, 3C), flash-style (no T x T buffers).
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;
using Half = ILGPU.Half;

namespace L2L.Backends.Ops;

/// <summary>Which kernel family computes attention.</summary>
public enum AttentionPath
{
    /// <summary>Tiled on GPUs when the head fits (<see cref="AttentionKernels.MaxTiledHeadSize"/>), row kernels otherwise and on the CPU accelerator.</summary>
    Auto,

    /// <summary>One thread per query (or key) row, no shared memory: the CPU accelerator's path.</summary>
    Rows,

    /// <summary>Shared-memory tiles of <see cref="AttentionKernels.Tile"/> positions: the GPU path.</summary>
    Tiled,
}

/// <summary>
/// Causal and/or masked multi-head attention, forward and backward, loaded once per accelerator.
/// Layout as GPT-2: <c>qkv</c> (B, T, 3C) with q, k, v along the last dimension; head <c>h</c> uses channels
/// <c>h*hs .. h*hs+hs-1</c> of each, <c>hs = C / NH</c>; output (B, T, C); scores scaled by <c>1/sqrt(hs)</c>.
/// Masking: <c>keyLengths</c> (B, int32) restricts sequence <c>b</c>'s queries to keys <c>0 .. keyLengths[b]-1</c>
/// (clamped to [0, T]); <c>keyMask</c> (B*T, int32) lets key <c>j</c> of sequence <c>b</c> be attended only where
/// <c>keyMask[b*T+j] != 0</c>; an empty view means no such restriction. A query with no visible key gets a zero output.
/// The forward saves only each query row's log-sum-exp (B, NH, T); the backward recomputes the probabilities tile by
/// tile, so the memory is O(B*NH*T). Results are deterministic: no atomics.
/// <para>16-bit storage: <c>Forward</c> and <c>Backward</c> also take <see cref="Bf16"/> or <see cref="Half"/>
/// <c>qkv</c>, <c>output</c>, <c>dOutput</c> and <c>dQkv</c> (kernels loaded on first use). Scores, softmax, <c>lse</c>
/// and <c>delta</c> are FP32 and every accumulation runs in FP32: the tiled kernels in FP32 shared memory, the row
/// kernels in an FP32 scratch buffer (<see cref="SixteenBitForwardScratchLength"/>,
/// <see cref="SixteenBitBackwardScratchLength"/>), each result rounded once into 16 bits.</para>
/// </summary>
public sealed class AttentionOps
{
    private delegate void RowsKernel(AcceleratorStream s, KernelConfig config, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c,
        ArrayView<int> keyLengths, ArrayView<int> keyMask, AttentionDims d);

    private delegate void BackwardKernel(AcceleratorStream s, KernelConfig config, ArrayView<float> dQkv, ArrayView<float> dOutput, ArrayView<float> qkv,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<int> keyLengths, ArrayView<int> keyMask, AttentionDims d);

    private readonly Accelerator _accelerator;
    private readonly Lazy<Kernels> _rows;
    private readonly Lazy<Kernels> _tiled;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionDims> _delta;

    private sealed record Kernels(RowsKernel Forward, BackwardKernel Query, BackwardKernel Key);

    /// <summary>The kernels of one 16-bit storage type: the row family takes an FP32 accumulator, the tiled family does not.</summary>
    private sealed class Typed<T> where T : unmanaged
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<int>, ArrayView<int>, AttentionDims> ForwardRows = null!;
        public Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<float>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims> QueryRows = null!, KeyRows = null!;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<T>, ArrayView<T>, AttentionDims> Delta = null!;
        public Lazy<(Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<float>, ArrayView<T>, ArrayView<int>, ArrayView<int>, AttentionDims> Forward,
            Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims> Query,
            Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims> Key)> Tiled = null!;
    }

    private readonly Lazy<Typed<Bf16>> _bf16;
    private readonly Lazy<Typed<Half>> _fp16;

    private Typed<T> LoadTyped<T, S>() where T : unmanaged where S : struct, IStorage<T>
    {
        var a = _accelerator;
        return new Typed<T>
        {
            ForwardRows = a.LoadKernel<ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<int>, ArrayView<int>, AttentionDims>(
                AttentionKernels.AttentionForwardRowsGenericKernel<T, S>),
            QueryRows = a.LoadKernel<ArrayView<T>, ArrayView<float>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims>(
                AttentionKernels.AttentionBackwardQueryRowsGenericKernel<T, S>),
            KeyRows = a.LoadKernel<ArrayView<T>, ArrayView<float>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims>(
                AttentionKernels.AttentionBackwardKeyRowsGenericKernel<T, S>),
            Delta = a.LoadKernel<ArrayView<float>, ArrayView<T>, ArrayView<T>, AttentionDims>(AttentionKernels.AttentionBackwardDeltaGenericKernel<T, S>),
            Tiled = new(() => (
                a.LoadKernel<ArrayView<T>, ArrayView<float>, ArrayView<T>, ArrayView<int>, ArrayView<int>, AttentionDims>(AttentionKernels.AttentionForwardTiledGenericKernel<T, S>),
                a.LoadKernel<ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims>(AttentionKernels.AttentionBackwardQueryTiledGenericKernel<T, S>),
                a.LoadKernel<ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims>(AttentionKernels.AttentionBackwardKeyTiledGenericKernel<T, S>))),
        };
    }

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator (each family on first use).</summary>
    public AttentionOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        var a = _accelerator;
        _delta = a.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionDims>(AttentionKernels.AttentionBackwardDeltaKernel);
        _rows = new Lazy<Kernels>(() => Load(AttentionKernels.AttentionForwardRowsKernel,
            AttentionKernels.AttentionBackwardQueryRowsKernel, AttentionKernels.AttentionBackwardKeyRowsKernel));
        _tiled = new Lazy<Kernels>(() => Load(AttentionKernels.AttentionForwardTiledKernel,
            AttentionKernels.AttentionBackwardQueryTiledKernel, AttentionKernels.AttentionBackwardKeyTiledKernel));
        _bf16 = new(LoadTyped<Bf16, Bf16Storage>);
        _fp16 = new(LoadTyped<Half, Fp16Storage>);
    }

    private Kernels Load(
        Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims> forward,
        Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims> query,
        Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims> key)
    {
        var f = _accelerator.LoadKernel(forward);
        var q = _accelerator.LoadKernel(query);
        var k = _accelerator.LoadKernel(key);
        return new Kernels((s, c, a1, a2, a3, kl, km, d) => f(s, c, a1, a2, a3, kl, km, d),
            (s, c, a1, a2, a3, a4, a5, kl, km, d) => q(s, c, a1, a2, a3, a4, a5, kl, km, d),
            (s, c, a1, a2, a3, a4, a5, kl, km, d) => k(s, c, a1, a2, a3, a4, a5, kl, km, d));
    }

    /// <summary>The length of the log-sum-exp buffer <c>Forward</c> saves: (B, NH, T).</summary>
    public static long LseLength(int b, int t, int nh) => (long)b * nh * t;

    /// <summary>The scratch length <c>Backward</c> needs: one (B, NH, T) row term.</summary>
    public static long BackwardScratchLength(int b, int t, int c, int nh) => LseLength(b, t, nh);

    /// <summary>
    /// FP32 scratch elements the 16-bit <c>Forward</c> needs on the path <paramref name="path"/> resolves to: (B, T, C)
    /// output accumulators for the row kernels, none for the tiled ones.
    /// </summary>
    public long SixteenBitForwardScratchLength(int b, int t, int c, int nh, AttentionPath path = AttentionPath.Auto) =>
        Resolve(path, c / nh) == AttentionPath.Rows ? (long)b * t * c : 0;

    /// <summary>
    /// FP32 scratch elements the 16-bit <c>Backward</c> needs: the (B, NH, T) row term and, on the row path, (B, T, 3C)
    /// gradient accumulators.
    /// </summary>
    public long SixteenBitBackwardScratchLength(int b, int t, int c, int nh, AttentionPath path = AttentionPath.Auto) =>
        LseLength(b, t, nh) + (Resolve(path, c / nh) == AttentionPath.Rows ? 3L * b * t * c : 0);

    /// <summary>
    /// The forward with BF16 <c>output</c> (B, T, C) and <c>qkv</c> (B, T, 3C); <c>lse</c> (B, NH, T) is FP32.
    /// <paramref name="scratch"/> holds at least <see cref="SixteenBitForwardScratchLength"/> floats (may be empty on the
    /// tiled path); its contents are overwritten. Masking and aliasing as the FP32 overload.
    /// </summary>
    public void Forward(AcceleratorStream s, ArrayView<Bf16> output, ArrayView<float> lse, ArrayView<float> scratch, ArrayView<Bf16> qkv,
        ArrayView<int> keyLengths, ArrayView<int> keyMask, int b, int t, int c, int nh, bool causal, AttentionPath path = AttentionPath.Auto) =>
        Forward(_bf16.Value, s, output, lse, scratch, qkv, keyLengths, keyMask, b, t, c, nh, causal, path);

    /// <summary>The forward with FP16 <c>output</c> and <c>qkv</c>; as the BF16 overload.</summary>
    public void Forward(AcceleratorStream s, ArrayView<Half> output, ArrayView<float> lse, ArrayView<float> scratch, ArrayView<Half> qkv,
        ArrayView<int> keyLengths, ArrayView<int> keyMask, int b, int t, int c, int nh, bool causal, AttentionPath path = AttentionPath.Auto) =>
        Forward(_fp16.Value, s, output, lse, scratch, qkv, keyLengths, keyMask, b, t, c, nh, causal, path);

    /// <summary>
    /// The backward with BF16 <c>dQkv</c>, <c>dOutput</c>, <c>qkv</c> and <c>output</c>; <c>lse</c> FP32 as saved by the
    /// forward. <paramref name="scratch"/> holds at least <see cref="SixteenBitBackwardScratchLength"/> floats; its
    /// contents are overwritten. Assigns <c>dQkv</c>, which must not alias any input.
    /// </summary>
    public void Backward(AcceleratorStream s, ArrayView<Bf16> dQkv, ArrayView<Bf16> dOutput, ArrayView<Bf16> qkv,
        ArrayView<Bf16> output, ArrayView<float> lse, ArrayView<float> scratch, ArrayView<int> keyLengths, ArrayView<int> keyMask,
        int b, int t, int c, int nh, bool causal, AttentionPath path = AttentionPath.Auto) =>
        Backward(_bf16.Value, s, dQkv, dOutput, qkv, output, lse, scratch, keyLengths, keyMask, b, t, c, nh, causal, path);

    /// <summary>The backward with FP16 tensors; as the BF16 overload.</summary>
    public void Backward(AcceleratorStream s, ArrayView<Half> dQkv, ArrayView<Half> dOutput, ArrayView<Half> qkv,
        ArrayView<Half> output, ArrayView<float> lse, ArrayView<float> scratch, ArrayView<int> keyLengths, ArrayView<int> keyMask,
        int b, int t, int c, int nh, bool causal, AttentionPath path = AttentionPath.Auto) =>
        Backward(_fp16.Value, s, dQkv, dOutput, qkv, output, lse, scratch, keyLengths, keyMask, b, t, c, nh, causal, path);

    /// <summary>
    /// The forward over the storage type <typeparamref name="T"/>: for float the FP32 overload (which needs no
    /// <paramref name="scratch"/>), for the 16-bit types their overloads, with <paramref name="scratch"/> of at least
    /// <see cref="ForwardScratchLength{T}"/> floats.
    /// </summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void Forward<T>(AcceleratorStream s, ArrayView<T> output, ArrayView<float> lse, ArrayView<float> scratch, ArrayView<T> qkv,
        ArrayView<int> keyLengths, ArrayView<int> keyMask, int b, int t, int c, int nh, bool causal, AttentionPath path = AttentionPath.Auto)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
            Forward(s, StorageDispatch.Same<T, float>(output), lse, StorageDispatch.Same<T, float>(qkv), keyLengths, keyMask, b, t, c, nh, causal, path);
        else
            Forward(StorageDispatch.Pick<T, Typed<T>, Typed<Bf16>, Typed<Half>>(null!, _bf16, _fp16), s, output, lse, scratch, qkv, keyLengths, keyMask, b, t, c, nh, causal, path);
    }

    /// <summary>
    /// The backward over the storage type <typeparamref name="T"/>: for float the FP32 overload, for the 16-bit types
    /// their overloads; <paramref name="scratch"/> holds at least <see cref="BackwardScratchLength{T}"/> floats.
    /// </summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void Backward<T>(AcceleratorStream s, ArrayView<T> dQkv, ArrayView<T> dOutput, ArrayView<T> qkv,
        ArrayView<T> output, ArrayView<float> lse, ArrayView<float> scratch, ArrayView<int> keyLengths, ArrayView<int> keyMask,
        int b, int t, int c, int nh, bool causal, AttentionPath path = AttentionPath.Auto) where T : unmanaged
    {
        if (typeof(T) == typeof(float))
            Backward(s, StorageDispatch.Same<T, float>(dQkv), StorageDispatch.Same<T, float>(dOutput), StorageDispatch.Same<T, float>(qkv),
                StorageDispatch.Same<T, float>(output), lse, scratch, keyLengths, keyMask, b, t, c, nh, causal, path);
        else
            Backward(StorageDispatch.Pick<T, Typed<T>, Typed<Bf16>, Typed<Half>>(null!, _bf16, _fp16), s, dQkv, dOutput, qkv, output, lse, scratch,
                keyLengths, keyMask, b, t, c, nh, causal, path);
    }

    /// <summary>FP32 scratch elements the generic <c>Forward&lt;T&gt;</c> needs: none for float, <see cref="SixteenBitForwardScratchLength"/> for 16 bits.</summary>
    public long ForwardScratchLength<T>(int b, int t, int c, int nh, AttentionPath path = AttentionPath.Auto) where T : unmanaged =>
        typeof(T) == typeof(float) ? 0 : SixteenBitForwardScratchLength(b, t, c, nh, path);

    /// <summary>FP32 scratch elements the generic <c>Backward&lt;T&gt;</c> needs: <see cref="BackwardScratchLength(int, int, int, int)"/> for float, <see cref="SixteenBitBackwardScratchLength"/> for 16 bits.</summary>
    public long BackwardScratchLength<T>(int b, int t, int c, int nh, AttentionPath path = AttentionPath.Auto) where T : unmanaged =>
        typeof(T) == typeof(float) ? BackwardScratchLength(b, t, c, nh) : SixteenBitBackwardScratchLength(b, t, c, nh, path);

    /// <summary>
    /// FP32 scratch elements the forward in <paramref name="precision"/> needs on the default path of a device of
    /// <paramref name="device"/>'s shape (as <see cref="ForwardScratchLength{T}"/>, without an accelerator: for planning).
    /// </summary>
    public static long ForwardScratchLength(Precision precision, DeviceShape device, int b, int t, int c, int nh) =>
        precision == Precision.Fp32 || DefaultPath(device, c / nh) == AttentionPath.Tiled ? 0 : (long)b * t * c;

    /// <summary>FP32 scratch elements the backward in <paramref name="precision"/> needs on the default path of a device of <paramref name="device"/>'s shape.</summary>
    public static long BackwardScratchLength(Precision precision, DeviceShape device, int b, int t, int c, int nh) =>
        LseLength(b, t, nh) + (precision == Precision.Fp32 || DefaultPath(device, c / nh) == AttentionPath.Tiled ? 0 : 3L * b * t * c);

    /// <summary>The path <see cref="AttentionPath.Auto"/> resolves to on a device of <paramref name="device"/>'s shape for heads of <paramref name="headSize"/> channels.</summary>
    public static AttentionPath DefaultPath(DeviceShape device, int headSize) =>
        !device.IsCpu && headSize <= AttentionKernels.MaxTiledHeadSize ? AttentionPath.Tiled : AttentionPath.Rows;

    private void Forward<T>(Typed<T> k, AcceleratorStream s, ArrayView<T> output, ArrayView<float> lse, ArrayView<float> scratch, ArrayView<T> qkv,
        ArrayView<int> keyLengths, ArrayView<int> keyMask, int b, int t, int c, int nh, bool causal, AttentionPath path) where T : unmanaged
    {
        var d = Validate(qkv, keyLengths, keyMask, b, t, c, nh, causal);
        Check.Length(output, (long)b * t * c, nameof(output));
        Check.Length(lse, LseLength(b, t, nh), nameof(lse));
        var resolved = Resolve(path, d.HeadSize);
        Check.AtLeast(scratch, SixteenBitForwardScratchLength(b, t, c, nh, resolved), nameof(scratch));
        if (resolved == AttentionPath.Tiled)
            k.Tiled.Value.Forward(s, TileLaunch(d), output, lse, qkv, keyLengths, keyMask, d);
        else
            k.ForwardRows(s, RowLaunch(LseLength(b, t, nh)), output, scratch.SubView(0, (long)b * t * c), lse, qkv, keyLengths, keyMask, d);
    }

    private void Backward<T>(Typed<T> k, AcceleratorStream s, ArrayView<T> dQkv, ArrayView<T> dOutput, ArrayView<T> qkv,
        ArrayView<T> output, ArrayView<float> lse, ArrayView<float> scratch, ArrayView<int> keyLengths, ArrayView<int> keyMask,
        int b, int t, int c, int nh, bool causal, AttentionPath path) where T : unmanaged
    {
        var (d, rows) = ValidateBackward(dQkv, dOutput, qkv, output, lse, keyLengths, keyMask, b, t, c, nh, causal);
        var resolved = Resolve(path, d.HeadSize);
        Check.AtLeast(scratch, SixteenBitBackwardScratchLength(b, t, c, nh, resolved), nameof(scratch));
        var delta = scratch.SubView(0, rows);
        k.Delta(s, RowLaunch(rows), delta, dOutput, output, d);
        if (resolved == AttentionPath.Tiled)
        {
            var tiled = k.Tiled.Value;
            var config = TileLaunch(d);
            tiled.Query(s, config, dQkv, dOutput, qkv, lse, delta, keyLengths, keyMask, d);
            tiled.Key(s, config, dQkv, dOutput, qkv, lse, delta, keyLengths, keyMask, d);
        }
        else
        {
            var acc = scratch.SubView(rows, qkv.Length);
            var config = RowLaunch(rows);
            k.QueryRows(s, config, dQkv, acc, dOutput, qkv, lse, delta, keyLengths, keyMask, d);
            k.KeyRows(s, config, dQkv, acc, dOutput, qkv, lse, delta, keyLengths, keyMask, d);
        }
    }

    /// <summary>The path <paramref name="path"/> resolves to on this accelerator for heads of <paramref name="headSize"/> channels.</summary>
    public AttentionPath Resolve(AttentionPath path, int headSize)
    {
        if (path == AttentionPath.Tiled && (headSize > AttentionKernels.MaxTiledHeadSize || _accelerator.MaxNumThreadsPerGroup < AttentionKernels.Tile))
            throw new ArgumentException(
                $"The tiled attention path needs heads of at most {AttentionKernels.MaxTiledHeadSize} channels (got {headSize}) and groups of " +
                $"{AttentionKernels.Tile} threads (this accelerator allows {_accelerator.MaxNumThreadsPerGroup}); use the row path.", nameof(path));
        if (path != AttentionPath.Auto)
            return path;
        return DefaultPath(DeviceShape.Of(_accelerator), headSize);
    }

    /// <summary>
    /// <c>output</c> (B, T, C) = attention of <c>qkv</c> (B, T, 3C); saves each query row's log-sum-exp <c>lse</c>
    /// (B, NH, T) for <c>Backward</c>. <c>keyLengths</c> is (B) or empty, <c>keyMask</c> (B*T) or empty.
    /// Neither output may alias <c>qkv</c>.
    /// </summary>
    public void Forward(AcceleratorStream s, ArrayView<float> output, ArrayView<float> lse, ArrayView<float> qkv,
        ArrayView<int> keyLengths, ArrayView<int> keyMask, int b, int t, int c, int nh, bool causal, AttentionPath path = AttentionPath.Auto)
    {
        var d = Validate(qkv, keyLengths, keyMask, b, t, c, nh, causal);
        Check.Length(output, (long)b * t * c, nameof(output));
        Check.Length(lse, LseLength(b, t, nh), nameof(lse));
        if (Resolve(path, d.HeadSize) == AttentionPath.Tiled)
            _tiled.Value.Forward(s, TileLaunch(d), output, lse, qkv, keyLengths, keyMask, d);
        else
            _rows.Value.Forward(s, RowLaunch(LseLength(b, t, nh)), output, lse, qkv, keyLengths, keyMask, d);
    }

    /// <summary>The forward pass without a per-key mask (<c>keyMask</c> empty), on the accelerator's default path.</summary>
    public void Forward(AcceleratorStream s, ArrayView<float> output, ArrayView<float> lse, ArrayView<float> qkv,
        ArrayView<int> keyLengths, int b, int t, int c, int nh, bool causal)
        => Forward(s, output, lse, qkv, keyLengths, ArrayView<int>.Empty, b, t, c, nh, causal);

    /// <summary>
    /// Assigns (does not accumulate) <c>dQkv</c> (B, T, 3C), the gradient of the loss with respect to <c>qkv</c>, from
    /// <c>dOutput</c> (B, T, C), and the <c>output</c> and <c>lse</c> that <c>Forward</c> computed for the same
    /// <c>qkv</c> and masking. <c>scratch</c> needs at least <see cref="BackwardScratchLength(int, int, int, int)"/> elements; its contents
    /// are overwritten. <c>dQkv</c> must not alias any input.
    /// </summary>
    public void Backward(AcceleratorStream s, ArrayView<float> dQkv, ArrayView<float> dOutput, ArrayView<float> qkv,
        ArrayView<float> output, ArrayView<float> lse, ArrayView<float> scratch, ArrayView<int> keyLengths, ArrayView<int> keyMask,
        int b, int t, int c, int nh, bool causal, AttentionPath path = AttentionPath.Auto)
    {
        var (d, rows) = ValidateBackward(dQkv, dOutput, qkv, output, lse, keyLengths, keyMask, b, t, c, nh, causal);
        Check.AtLeast(scratch, BackwardScratchLength(b, t, c, nh), nameof(scratch));
        var delta = scratch.SubView(0, rows);
        _delta(s, RowLaunch(rows), delta, dOutput, output, d);
        if (Resolve(path, d.HeadSize) == AttentionPath.Tiled)
        {
            var k = _tiled.Value;
            var config = TileLaunch(d);
            k.Query(s, config, dQkv, dOutput, qkv, lse, delta, keyLengths, keyMask, d);
            k.Key(s, config, dQkv, dOutput, qkv, lse, delta, keyLengths, keyMask, d);
        }
        else
        {
            var k = _rows.Value;
            var config = RowLaunch(rows);
            k.Query(s, config, dQkv, dOutput, qkv, lse, delta, keyLengths, keyMask, d);
            k.Key(s, config, dQkv, dOutput, qkv, lse, delta, keyLengths, keyMask, d);
        }
    }

    /// <summary>The backward pass without a per-key mask (<c>keyMask</c> empty), on the accelerator's default path.</summary>
    public void Backward(AcceleratorStream s, ArrayView<float> dQkv, ArrayView<float> dOutput, ArrayView<float> qkv,
        ArrayView<float> output, ArrayView<float> lse, ArrayView<float> scratch, ArrayView<int> keyLengths, int b, int t, int c, int nh, bool causal)
        => Backward(s, dQkv, dOutput, qkv, output, lse, scratch, keyLengths, ArrayView<int>.Empty, b, t, c, nh, causal);

    /// <summary>Checks a backward's shapes (as <see cref="Validate"/>, plus the gradients, the output and <c>lse</c>); returns the dims and the row count B·NH·T.</summary>
    private static (AttentionDims Dims, long Rows) ValidateBackward<T>(ArrayView<T> dQkv, ArrayView<T> dOutput, ArrayView<T> qkv,
        ArrayView<T> output, ArrayView<float> lse, ArrayView<int> keyLengths, ArrayView<int> keyMask,
        int b, int t, int c, int nh, bool causal) where T : unmanaged
    {
        var d = Validate(qkv, keyLengths, keyMask, b, t, c, nh, causal);
        Check.Length(dQkv, qkv.Length, nameof(dQkv));
        Check.Length(dOutput, (long)b * t * c, nameof(dOutput));
        Check.Length(output, (long)b * t * c, nameof(output));
        var rows = LseLength(b, t, nh);
        Check.Length(lse, rows, nameof(lse));
        return (d, rows);
    }

    private static AttentionDims Validate<T>(ArrayView<T> qkv, ArrayView<int> keyLengths, ArrayView<int> keyMask,
        int b, int t, int c, int nh, bool causal) where T : unmanaged
    {
        Check.Positive(b, nameof(b));
        Check.Positive(t, nameof(t));
        Check.Positive(c, nameof(c));
        Check.Positive(nh, nameof(nh));
        if (c % nh != 0)
            throw new ArgumentException($"The channel count c = {c} is not a multiple of the head count nh = {nh}.", nameof(c));
        // The kernels decompose row indices in 32 bits; offsets into the tensors are 64-bit.
        if (LseLength(b, t, nh) > int.MaxValue || 3L * c > int.MaxValue)
            throw new ArgumentException($"B*NH*T = {LseLength(b, t, nh)} query rows exceed 2^31-1; split the batch into smaller micro-batches.", nameof(b));
        Check.Length(qkv, 3L * b * t * c, nameof(qkv));
        if (keyLengths.Length != 0)
            Check.Length(keyLengths, b, nameof(keyLengths));
        if (keyMask.Length != 0)
            Check.Length(keyMask, (long)b * t, nameof(keyMask));
        return new AttentionDims(b, t, c, nh, causal);
    }

    // A tile per group; every (b, h, tile) once when the device holds them, else a grid-stride over them.
    private KernelConfig TileLaunch(AttentionDims d)
    {
        long tiles = (long)d.B * d.NH * d.Tiles;
        return new KernelConfig(RowLaunchGroups(tiles, AttentionKernels.Tile, waves: 8), AttentionKernels.Tile);
    }

    // A thread owns a whole row of T keys, so rows are few and heavy: smaller groups spread them over more
    // multiprocessors on a GPU.
    private KernelConfig RowLaunch(long rows)
    {
        var group = Launch.GroupSize(_accelerator, 64);
        return new KernelConfig(RowLaunchGroups((rows + group - 1) / group, group, waves: 4), group);
    }

    private int RowLaunchGroups(long wanted, int group, long waves)
    {
        if (_accelerator.AcceleratorType == AcceleratorType.CPU)
            waves = 1;
        var maxGroups = Math.Max(1L, _accelerator.MaxNumThreads * waves / group);
        return (int)Math.Clamp(wanted, 1, maxGroups);
    }
}
